// Prefill-path matrix x matrix: Y[t][out_offset + r] = sum_k W[r][k] * X[t][k]. Same bindings
// as matvec.wgsl. Two shapes:
// - main (GPUs): tiled 64 rows x 32 tokens per workgroup; each thread owns a 4 x 2 register
//   block. Weights are dequantized once per tile into workgroup memory.
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
const TN: u32 = 32u;
const TK: u32 = 32u;
// Row stride 9 vec4 (36 floats) keeps the 4-row-apart reads off one memory bank.
var<workgroup> ws: array<vec4<f32>, 576>; // TM x (TK/4 + 1)
var<workgroup> xs: array<vec4<f32>, 288>; // TN x (TK/4 + 1)

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tx = lid % 16u; // rows tx*4 .. +4
    let ty = lid / 16u; // tokens ty*2 .. +2
    let r0 = wid.x * TM;
    let t0 = wid.y * TN;
    var acc: array<vec2<f32>, 4>;
    for (var kk = 0u; kk < wp.k; kk += TK) {
        for (var i = lid; i < TM * 8u; i += 256u) {
            let rr = i / 8u;
            let c = i % 8u;
            var v = vec4<f32>(0.0);
            if (r0 + rr < wp.rows) { v = load4(r0 + rr, kk + c * 4u); }
            ws[rr * 9u + c] = v;
        }
        {
            let tt = lid / 8u;
            let c = lid % 8u;
            var v = vec4<f32>(0.0);
            if (t0 + tt < step.n_tok) { v = x[(t0 + tt) * (wp.k / 4u) + kk / 4u + c]; }
            xs[tt * 9u + c] = v;
        }
        workgroupBarrier();
        for (var c = 0u; c < 8u; c++) {
            let xa = xs[(ty * 2u) * 9u + c];
            let xb = xs[(ty * 2u + 1u) * 9u + c];
            for (var i = 0u; i < 4u; i++) {
                let wv = ws[(tx * 4u + i) * 9u + c];
                acc[i] += vec2<f32>(dot(wv, xa), dot(wv, xb));
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = r0 + tx * 4u + i;
        if (r >= wp.rows) { continue; }
        for (var j = 0u; j < 2u; j++) {
            let t = t0 + ty * 2u + j;
            if (t >= step.n_tok) { continue; }
            store(r, t, acc[i][j]);
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
