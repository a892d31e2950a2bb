// Decode-path matrix x vector: y[t][out_offset + r] = sum_k W[r][k] * x[t][k] (+ bias, + y).
// LANES threads share a row (256 / LANES rows per workgroup), taking its groups of 4 columns
// in turn, so neighbouring lanes read neighbouring weight words and x values (coalesced).
// GPUs use 32 lanes, summed with subgroup shuffles where the adapter has subgroups
// (reduce_subgroup.wgsl) or through workgroup memory (reduce_shared.wgsl); CPU adapters
// (lavapipe, SwiftShader), where barriers are costly, use 1 lane per row and no reduction.
//
// Fusions that save a dispatch each in the decode step:
// - NORM: x is RMS-normalised with weights `norm_w` on the fly. norm(x)·w = inv_rms · (x∘g)·w,
//   and the lanes of a row together read all of x, so the sum of squares rides along in the
//   same reduction as the dot product.
// - GLU: the weight stacks gate rows over up rows; a row computes both and writes
//   act(gate) * up (SwiGLU / GeGLU).

struct WParams {
    k: u32,            // row length
    rows: u32,         // output rows of this dispatch (with GLU: gate rows)
    scale_base: u32,   // word offset of separated f16 scales
    out_offset: u32,   // first output row this part writes (parts split large tensors)
    out_stride: u32,   // y row stride
    flags: u32,        // 1: accumulate into y, 2: add bias, 4: only the step's last token,
                       // 8: NORM, 16: GLU; act in bits 8..
    eps: f32,
    _p1: u32,
}
struct Step { n_tok: u32, pos0: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<uniform> wp: WParams;
@group(0) @binding(5) var<uniform> step: Step;
@group(0) @binding(6) var<storage, read> norm_w: array<vec4<f32>>;

#include activation

// Row r's columns 4g..4g+3 against x: (dot, dot with the up row, sum of squares of x).
fn group4(r: u32, xb: u32, g: u32, norm: bool, glu: bool) -> vec3<f32> {
    var xv = x[xb + g];
    var out = vec3<f32>(0.0);
    if (norm) {
        out.z = dot(xv, xv);
        xv *= norm_w[g];
    }
    out.x = dot(load4(r, 4u * g), xv);
    if (glu) { out.y = dot(load4(r + wp.rows, 4u * g), xv); }
    return out;
}

override LANES: u32 = 32u;
override ROWS_PER_WG: u32 = 256u / LANES;
#include reduce

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let lane = lid % LANES;
    let row_in_wg = lid / LANES;
    let r = wid.x * ROWS_PER_WG + row_in_wg;
    var t = wid.y;
    var y_row = wid.y;
    if ((wp.flags & 4u) != 0u) {
        t = step.n_tok - 1u;
        y_row = 0u;
    }
    let norm = (wp.flags & 8u) != 0u;
    let glu = (wp.flags & 16u) != 0u;
    // x: dot with the row; y: dot with the up row (GLU); z: sum of squares of x (NORM).
    var acc = vec3<f32>(0.0);
    if (r < wp.rows) {
        let xb = t * (wp.k / 4u);
        let n4 = wp.k / 4u;
        var g = lane;
        // Four groups per iteration: their loads are independent, so they are all in flight
        // at once instead of one memory latency per group.
        for (; g + 3u * LANES < n4; g += 4u * LANES) {
            acc += group4(r, xb, g, norm, glu) + group4(r, xb, g + LANES, norm, glu)
                + group4(r, xb, g + 2u * LANES, norm, glu) + group4(r, xb, g + 3u * LANES, norm, glu);
        }
        for (; g < n4; g += LANES) { acc += group4(r, xb, g, norm, glu); }
    }
    acc = reduce_row(acc, lid, lane);
    if (lane == 0u && r < wp.rows) {
        if (norm) { acc *= inverseSqrt(acc.z / f32(wp.k) + wp.eps); }
        let o = wp.out_offset + r;
        var v = acc.x;
        if (glu) { v = activation(v, wp.flags >> 8u) * acc.y; }
        if ((wp.flags & 2u) != 0u) { v += bias[o]; }
        let yi = y_row * wp.out_stride + o;
        if ((wp.flags & 1u) != 0u) { v += y[yi]; }
        y[yi] = v;
    }
}
