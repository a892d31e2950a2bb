// What the attention kernels share: their parameters and bindings (one bind group layout,
// so decode's and prefill's kernels and the combine take the same bind group), and the
// block and window arithmetic. Blocks are `ap.heads` query heads of one kv group times
// `ap.tokens` consecutive tokens.

struct AParams {
    n_head: u32,
    n_kv: u32,
    head_dim: u32,
    window: u32,
    scale: f32,
    q_stride: u32, // floats per token in the q buffer (q, k and v rows side by side)
    // 1: decode with rope_kv fused (raw q, k, v in; this step's k and v go to the cache;
    // one head per workgroup); 2: NeoX rotation; 4: q/k norms (weights: q norm then k norm)
    flags: u32,
    n_rot: u32,
    eps: f32,
    heads: u32,  // query heads per block
    tokens: u32, // tokens per block
    _p0: u32,
}
// `splits` key splits of `chunk` positions each, per token (set per step on the CPU).
struct Step { n_tok: u32, pos0: u32, splits: u32, chunk: u32 }

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(2) var<storage, read_write> v_cache: array<u32>;
// Key-split partials (attention_partials.wgsl's layout).
@group(0) @binding(3) var<storage, read_write> part: array<f32>;
@group(0) @binding(4) var<uniform> ap: AParams;
@group(0) @binding(5) var<uniform> step: Step;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

const NEG: f32 = -3.0e38;

// Block query g's head and token.
fn member(g: u32, h0: u32, t0: u32) -> vec2<u32> {
    return vec2<u32>(h0 + g % ap.heads, t0 + g / ap.heads);
}

// The first key a query at `pos` sees.
fn first_key(pos: u32) -> u32 {
    if (ap.window > 0u && pos + 1u > ap.window) { return pos + 1u - ap.window; }
    return 0u;
}

// A workgroup's block: its first query head and token; its live queries (those past the
// step's last token stay idle: no keys, nothing written); the keys lo..hi-1 it attends to in
// its key split (wid.y; each query masks its own); and where its kv head's words start in a
// cache row of kv_words.
struct Block { h0: u32, t0: u32, members: u32, lo: u32, hi: u32, head_words: u32, kv_words: u32 }

fn block(wid: vec3<u32>) -> Block {
    let h0 = wid.x * ap.heads;
    let t0 = wid.z * ap.tokens;
    let members = ap.heads * min(ap.tokens, step.n_tok - t0);
    let lo = max(first_key(step.pos0 + t0), wid.y * step.chunk);
    let hi = min(step.pos0 + member(members - 1u, h0, t0).y + 1u, (wid.y + 1u) * step.chunk);
    let half = ap.head_dim / 2u;
    return Block(h0, t0, members, lo, hi, h0 / (ap.n_head / ap.n_kv) * half, ap.n_kv * half);
}
