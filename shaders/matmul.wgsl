// Prefill-path matrix x matrix: Y[t][out_offset + r] = sum_k W[r][k] * X[t][k]. Same bindings
// as matvec.wgsl. Two shapes:
// - main (GPUs): tiles of TM rows (64, 32 or 16: the engine prepends it, and takes smaller
//   tiles where 64-row ones would leave a big GPU's cores idle) x 64 tokens per workgroup;
//   each thread owns TM / 16 rows (16 apart, so a warp's reads of workgroup memory hit
//   distinct banks) x 4 tokens. Weights are dequantized once per tile into workgroup
//   memory, and the next step's tile is fetched into registers while this one is multiplied. The engine prepends `TV`, the tile element:
//   vec4<f16> where the adapter has shader-f16 (half the workgroup memory and its traffic,
//   products summed in f16 four at a time, sums kept in f32: llama.cpp's Vulkan tiles do the
//   same), else vec4<f32>; and `TK`, columns per step (32 or 16: either way 2 x 64 x TK
//   elements fit the 16 KiB of workgroup memory every adapter has). A matrix with too few
//   tiles to fill the GPU splits its columns: workgroup z takes columns from z * split_k
//   and writes its sums to slab z of a scratch (rows of out_stride per token, no bias or
//   accumulation), which split_sum.wgsl, or the norm after the matmul (rmsnorm.wgsl), adds
//   up. With GLU (flag 16, the activation in bits 8..; tiles of 64 or 32 rows) a tile's
//   first half are gate rows and its second half their up rows, so each thread holds a
//   gate row's sums beside its up row's and writes act(gate) * up: the gated unit without a
//   pass of its own, and without writing the gate and up rows out.
// - rows (CPU adapters, where a barrier makes every invocation of the workgroup stop and
//   resume): one invocation per (row, ROW_TOKENS tokens), no workgroup memory and no
//   barriers; each group of 4 weights is dequantized once for all its tokens.

struct WParams {
    k: u32, rows: u32, scale_base: u32, out_offset: u32,
    out_stride: u32, flags: u32, _eps: f32, split_k: u32,
}
struct Step { n_tok: u32, pos0: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<uniform> wp: WParams;
@group(0) @binding(5) var<uniform> step: Step;

const TN: u32 = 64u;
const CG: u32 = TK / 4u;            // column groups (vec4) per step
const STRIDE: u32 = CG + 1u;        // padded row stride: 16 consecutive rows land on distinct banks
const WN: u32 = TM * CG;            // weight tile elements per step: 64 to 512
const XN: u32 = TN * CG;            // token tile elements per step: 256 or 512
var<workgroup> ws: array<TV, TM * STRIDE>;
var<workgroup> xs: array<TV, TN * STRIDE>;

fn glu() -> bool {
    return (wp.flags & 16u) != 0u;
}

// Output rows per tile: with GLU half the tile's rows are up rows.
fn tile_outputs() -> u32 {
    return select(TM, TM / 2u, glu());
}

// Tile element i (row-major, CG per row) of the weights and of the tokens at column kk; zero
// past the tile.
fn weight_at(r0: u32, i: u32, kk: u32) -> vec4<f32> {
    let tr = i / CG;
    let r = r0 + tr % tile_outputs();
    if (i >= WN || r >= wp.rows) { return vec4<f32>(0.0); }
    // With GLU the up rows follow the gate rows in the matrix.
    return load4(r + (tr / tile_outputs()) * wp.rows, kk + 4u * (i % CG));
}

fn token_at(t0: u32, i: u32, kk: u32) -> vec4<f32> {
    let t = t0 + i / CG;
    if (i >= XN || t >= step.n_tok) { return vec4<f32>(0.0); }
    return x[t * (wp.k / 4u) + kk / 4u + i % CG];
}

fn tile_at(i: u32) -> u32 {
    return (i / CG) * STRIDE + i % CG;
}

// One weight group against four tokens' groups.
fn dots(wv: TV, x0: TV, x1: TV, x2: TV, x3: TV) -> vec4<f32> {
    return vec4<f32>(f32(dot(wv, x0)), f32(dot(wv, x1)), f32(dot(wv, x2)), f32(dot(wv, x3)));
}

// Row r's sums for tokens t, t + 16, t + 32, t + 48, into the output rows from `slab`.
fn store4(r: u32, t: u32, slab: u32, a: vec4<f32>) {
    if (r >= wp.rows) { return; }
    for (var j = 0u; j < 4u; j++) {
        if (t + 16u * j < step.n_tok) { store(r, slab + t + 16u * j, a[j]); }
    }
}

// Registers only, no private arrays: drivers may put an indexed array in local memory,
// which made this loop run at a tenth of the GPU's speed.
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tx = lid % 16u; // rows tx + 16 i
    let ty = lid / 16u; // tokens ty + 16 j
    let r0 = wid.x * tile_outputs();
    let t0 = wid.y * TN;
    let k0 = wid.z * wp.split_k;
    let k1 = min(k0 + wp.split_k, wp.k);
    let l2 = lid + 256u; // second element where a tile has 512
    var wa = weight_at(r0, lid, k0);
    var xa = token_at(t0, lid, k0);
    var wb = weight_at(r0, l2, k0);
    var xb = token_at(t0, l2, k0);
    // a_i: row tx + 16 i (i < TM / 16); component j: token ty + 16 j.
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var kk = k0; kk < k1; kk += TK) {
        if (lid < WN) { ws[tile_at(lid)] = TV(wa); }
        if (WN > 256u) { ws[tile_at(l2)] = TV(wb); }
        xs[tile_at(lid)] = TV(xa);
        if (XN > 256u) { xs[tile_at(l2)] = TV(xb); }
        workgroupBarrier();
        if (kk + TK < k1) {
            wa = weight_at(r0, lid, kk + TK);
            wb = weight_at(r0, l2, kk + TK);
            xa = token_at(t0, lid, kk + TK);
            xb = token_at(t0, l2, kk + TK);
        }
        for (var c = 0u; c < CG; c++) {
            let x0 = xs[ty * STRIDE + c];
            let x1 = xs[(ty + 16u) * STRIDE + c];
            let x2 = xs[(ty + 32u) * STRIDE + c];
            let x3 = xs[(ty + 48u) * STRIDE + c];
            a0 += dots(ws[tx * STRIDE + c], x0, x1, x2, x3);
            if (TM >= 32u) { a1 += dots(ws[(tx + 16u) * STRIDE + c], x0, x1, x2, x3); }
            if (TM == 64u) {
                a2 += dots(ws[(tx + 32u) * STRIDE + c], x0, x1, x2, x3);
                a3 += dots(ws[(tx + 48u) * STRIDE + c], x0, x1, x2, x3);
            }
        }
        workgroupBarrier();
    }
    if (glu()) {
        // a0: gate row tx; its up row is a1 (32-row tiles) or a2 (64), as a1's is a3.
        if (TM == 32u) {
            store4(r0 + tx, t0 + ty, 0u, gated(a0, a1));
        } else {
            store4(r0 + tx, t0 + ty, 0u, gated(a0, a2));
            store4(r0 + tx + 16u, t0 + ty, 0u, gated(a1, a3));
        }
        return;
    }
    let slab = wid.z * step.n_tok;
    store4(r0 + tx, t0 + ty, slab, a0);
    if (TM >= 32u) { store4(r0 + tx + 16u, t0 + ty, slab, a1); }
    if (TM == 64u) {
        store4(r0 + tx + 32u, t0 + ty, slab, a2);
        store4(r0 + tx + 48u, t0 + ty, slab, a3);
    }
}

#include activation

fn gated(gate: vec4<f32>, up: vec4<f32>) -> vec4<f32> {
    let act = (wp.flags >> 8u) & 0xFFu;
    return vec4<f32>(activation(gate.x, act), activation(gate.y, act), activation(gate.z, act), activation(gate.w, act)) * up;
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
