// Appends the step's keys and values to the layer's KV cache, stored as f16 pairs
// (pack2x16float needs no shader-f16 feature, and halves cache memory like llama.cpp's
// default f16 cache). Cache layout: [position][kv_dim / 2] words.

struct KParams { kv_dim: u32, _p0: u32, _p1: u32, _p2: u32 }
struct Step { n_tok: u32, pos0: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read> k: array<vec2<f32>>;
@group(0) @binding(1) var<storage, read> v: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(3) var<storage, read_write> v_cache: array<u32>;
@group(0) @binding(4) var<uniform> kp: KParams;
@group(0) @binding(5) var<uniform> step: Step;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = kp.kv_dim / 2u;
    let t = gid.y;
    if (t >= step.n_tok || gid.x >= half) { return; }
    let src = t * half + gid.x;
    let dst = (step.pos0 + t) * half + gid.x;
    k_cache[dst] = pack2x16float(k[src]);
    v_cache[dst] = pack2x16float(v[src]);
}
