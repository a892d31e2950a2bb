// Prefill-path matrix x matrix: Y[t][out_offset + r] = sum_k W[r][k] * X[t][k]. Same bindings
// as matvec.wgsl. Two shapes:
// - main (GPUs): tiles of 64 rows x 64 tokens per workgroup; each thread owns 4 rows (16
//   apart, so a warp's reads of workgroup memory hit distinct banks) x 4 tokens. Weights are
//   dequantized once per tile into workgroup memory, and the next step's tile is fetched
//   into registers while this one is multiplied. The engine prepends `TV`, the tile element:
//   vec4<f16> where the adapter has shader-f16 (half the workgroup memory and its traffic,
//   products summed in f16 four at a time, sums kept in f32: llama.cpp's Vulkan tiles do the
//   same), else vec4<f32>; and `TK`, columns per step (32 or 16: either way 2 x 64 x TK
//   elements fit the 16 KiB of workgroup memory every adapter has).
// - rows (CPU adapters, where a barrier makes every invocation of the workgroup stop and
//   resume): one invocation per (row, ROW_TOKENS tokens), no workgroup memory and no
//   barriers; each group of 4 weights is dequantized once for all its tokens.

struct WParams {
    k: u32, rows: u32, scale_base: u32, out_offset: u32,
    out_stride: u32, flags: u32, _p0: u32, _p1: u32,
}
struct Step { n_tok: u32, pos0: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<uniform> wp: WParams;
@group(0) @binding(5) var<uniform> step: Step;

const TM: u32 = 64u;
const TN: u32 = 64u;
const CG: u32 = TK / 4u;            // column groups (vec4) per step
const STRIDE: u32 = CG + 1u;        // padded row stride: 16 consecutive rows land on distinct banks
const LOADS: u32 = TM * CG / 256u;  // tile elements each thread fetches per step
var<workgroup> ws: array<TV, TM * STRIDE>;
var<workgroup> xs: array<TV, TN * STRIDE>;

// Tile element i (row-major, CG per row) of the weights and of the tokens at column kk.
fn weight_at(r0: u32, i: u32, kk: u32) -> vec4<f32> {
    let r = r0 + i / CG;
    if (r >= wp.rows) { return vec4<f32>(0.0); }
    return load4(r, kk + 4u * (i % CG));
}

fn token_at(t0: u32, i: u32, kk: u32) -> vec4<f32> {
    let t = t0 + i / CG;
    if (t >= step.n_tok) { return vec4<f32>(0.0); }
    return x[t * (wp.k / 4u) + kk / 4u + i % CG];
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tx = lid % 16u; // rows tx + 16 i
    let ty = lid / 16u; // tokens ty + 16 j
    let r0 = wid.x * TM;
    let t0 = wid.y * TN;
    var wr: array<vec4<f32>, LOADS>;
    var xr: array<vec4<f32>, LOADS>;
    for (var l = 0u; l < LOADS; l++) {
        wr[l] = weight_at(r0, lid + 256u * l, 0u);
        xr[l] = token_at(t0, lid + 256u * l, 0u);
    }
    var acc: array<vec4<f32>, 4>; // acc[i][j]: row tx + 16 i, token ty + 16 j
    for (var kk = 0u; kk < wp.k; kk += TK) {
        for (var l = 0u; l < LOADS; l++) {
            let i = lid + 256u * l;
            ws[(i / CG) * STRIDE + i % CG] = TV(wr[l]);
            xs[(i / CG) * STRIDE + i % CG] = TV(xr[l]);
        }
        workgroupBarrier();
        if (kk + TK < wp.k) {
            for (var l = 0u; l < LOADS; l++) {
                wr[l] = weight_at(r0, lid + 256u * l, kk + TK);
                xr[l] = token_at(t0, lid + 256u * l, kk + TK);
            }
        }
        for (var c = 0u; c < CG; c++) {
            var xv: array<TV, 4>;
            for (var j = 0u; j < 4u; j++) { xv[j] = xs[(ty + 16u * j) * STRIDE + c]; }
            for (var i = 0u; i < 4u; i++) {
                let wv = ws[(tx + 16u * i) * STRIDE + c];
                acc[i] += vec4<f32>(f32(dot(wv, xv[0])), f32(dot(wv, xv[1])), f32(dot(wv, xv[2])), f32(dot(wv, xv[3])));
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = r0 + tx + 16u * i;
        if (r >= wp.rows) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let t = t0 + ty + 16u * j;
            if (t < step.n_tok) { store(r, t, acc[i][j]); }
        }
    }
}

// The output of row r for token t, with the flags' bias and accumulation.
fn store(r: u32, t: u32, acc: f32) {
    let o = wp.out_offset + r;
    var v = acc;
    if ((wp.flags & 2u) != 0u) { v += bias[o]; }
    let yi = t * wp.out_stride + o;
    if ((wp.flags & 1u) != 0u) { v += y[yi]; }
    y[yi] = v;
}

const ROW_TOKENS: u32 = 8u;

@compute @workgroup_size(64)
fn rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    let t0 = gid.y * ROW_TOKENS;
    if (r >= wp.rows) { return; }
    let n4 = wp.k / 4u;
    let last = step.n_tok - 1u;
    var acc: array<f32, ROW_TOKENS>;
    for (var g = 0u; g < n4; g++) {
        let wv = load4(r, 4u * g);
        // Tokens past the step's last re-read it (their sums are dropped): no branch.
        for (var j = 0u; j < ROW_TOKENS; j++) { acc[j] += dot(wv, x[min(t0 + j, last) * n4 + g]); }
    }
    for (var j = 0u; j < ROW_TOKENS; j++) {
        if (t0 + j <= last) { store(r, t0 + j, acc[j]); }
    }
}
