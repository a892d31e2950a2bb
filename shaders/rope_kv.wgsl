// Prepares a step's q, k and v for attention in one pass over the heads: the optional
// per-head RMSNorm (qwen3, gemma3 q/k norms), rotary position embedding, and the append of
// k and v to the layer's KV cache. One workgroup per (q or kv head, token).
//
// q, k and v sit side by side per token in one buffer ([q | k | v], `stride` floats);
// q is rewritten in place. The cache stores f16 pairs (pack2x16float needs no shader-f16,
// and halves cache memory like llama.cpp's default f16 cache): [position][kv_dim / 2] words.
// The rotation itself is rotary.wgsl's. In prefill, where the q/k/v matmul split its
// columns (matmul.wgsl), the inputs are the sums of its slabs plus its bias, read here
// instead of a pass that would write them out first.

struct PParams {
    n_head: u32,
    n_kv: u32,
    head_dim: u32,
    n_rot: u32,
    stride: u32,
    flags: u32, // 1: NeoX layout, 2: q/k norm (weights: q norm then k norm), 4: add bias
    eps: f32,
    splits: u32, // slabs the inputs are summed from; 0: read qkv
}
struct Step { n_tok: u32, pos0: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> norm_w: array<f32>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(3) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<u32>;
@group(0) @binding(5) var<uniform> pp: PParams;
@group(0) @binding(6) var<uniform> step: Step;
@group(0) @binding(7) var<storage, read> slabs: array<f32>;
@group(0) @binding(8) var<storage, read> bias: array<f32>;

const WG: u32 = 64u;
#include rotary
#include slab_sum

var<workgroup> head: array<f32, 256>;
var<workgroup> sums: array<f32, WG>;

// Token t's q/k/v value at column c.
fn input(t: u32, c: u32) -> f32 {
    if (pp.splits == 0u) { return qkv[t * pp.stride + c]; }
    var v = slab_sum(t * pp.stride + c, step.n_tok * pp.stride, pp.splits);
    if ((pp.flags & 4u) != 0u) { v += bias[c]; }
    return v;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.y;
    let hd = pp.head_dim;
    let is_q = wid.x < pp.n_head;
    var hi = wid.x;
    var col = wid.x * hd;
    if (!is_q) {
        hi = wid.x - pp.n_head;
        col = (pp.n_head + hi) * hd;
    }
    let base = t * pp.stride + col;
    for (var d = lid; d < hd; d += WG) { head[d] = input(t, col + d); }

    if ((pp.flags & 2u) != 0u) {
        var s = 0.0;
        for (var d = lid; d < hd; d += WG) { s += head[d] * head[d]; }
        sums[lid] = s;
        workgroupBarrier();
        for (var k = WG / 2u; k > 0u; k >>= 1u) {
            if (lid < k) { sums[lid] += sums[lid + k]; }
            workgroupBarrier();
        }
        let inv = inverseSqrt(sums[0] / f32(hd) + pp.eps);
        let wb = select(hd, 0u, is_q);
        for (var d = lid; d < hd; d += WG) { head[d] = head[d] * inv * norm_w[wb + d]; }
    }
    workgroupBarrier();

    let pos = step.pos0 + t;
    for (var i = lid; i < pp.n_rot / 2u; i += WG) {
        let r = rotation(i, pos, pp.n_rot, (pp.flags & 1u) != 0u);
        let x = rotated(r, head[r.i0], head[r.i1]);
        head[r.i0] = x.x;
        head[r.i1] = x.y;
    }
    workgroupBarrier();

    if (is_q) {
        for (var d = lid; d < hd; d += WG) { qkv[base + d] = head[d]; }
        return;
    }
    let kv_dim = pp.n_kv * hd;
    let dst = pos * (kv_dim / 2u) + hi * hd / 2u;
    let vc = col + kv_dim;
    for (var w = lid; w < hd / 2u; w += WG) {
        k_cache[dst + w] = pack2x16float(vec2<f32>(head[2u * w], head[2u * w + 1u]));
        v_cache[dst + w] = pack2x16float(vec2<f32>(input(t, vc + 2u * w), input(t, vc + 2u * w + 1u)));
    }
}
