// Causal attention over the KV cache, split over the keys (flash-decoding): `partial` runs one
// workgroup per (kv head, key split, query token) and leaves an unnormalised result with its
// running max and sum; `combine` merges a token's splits per query head. One workgroup per
// head would leave a big GPU idle and serialise long contexts; splits keep every context
// length parallel. A kv head's workgroup serves all its query heads (grouped-query
// attention), so each key and value is read once per group. `window` > 0 limits a query to
// its last `window` positions (Gemma's sliding-window layers).

struct AParams {
    n_head: u32,
    n_kv: u32,
    head_dim: u32,
    window: u32,
    scale: f32,
    q_stride: u32, // floats per token in the q buffer (q, k and v rows side by side)
    _p0: u32,
    _p1: u32,
}
// `splits` key splits of `chunk` positions each, per token (set per step on the CPU).
struct Step { n_tok: u32, pos0: u32, splits: u32, chunk: u32 }

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k_cache: array<u32>;
@group(0) @binding(2) var<storage, read> v_cache: array<u32>;
// Per (token, head, split): head_dim accumulators, then max, then sum.
@group(0) @binding(3) var<storage, read_write> part: array<f32>;
@group(0) @binding(4) var<uniform> ap: AParams;
@group(0) @binding(5) var<uniform> step: Step;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;
const TILE: u32 = 32u;          // keys per inner step
const MAX_GQ: u32 = 2048u;      // query heads per kv head x head_dim
const ACC: u32 = MAX_GQ / WG;   // accumulators per thread
const NEG: f32 = -3.0e38;

var<workgroup> qs: array<f32, MAX_GQ>;
var<workgroup> sc: array<f32, WG>;      // scores, then probabilities, [group head][key]
var<workgroup> m_run: array<f32, 8>;    // per group head: running max
var<workgroup> corr: array<f32, 8>;     // per group head: rescale of older accumulators

@compute @workgroup_size(256)
fn partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let kvh = wid.x;
    let split = wid.y;
    let t = wid.z;
    let hd = ap.head_dim;
    let group = ap.n_head / ap.n_kv;
    let gq = group * hd;
    let kv_words = ap.n_kv * hd / 2u;
    let pos = step.pos0 + t;
    var first = 0u;
    if (ap.window > 0u && pos + 1u > ap.window) { first = pos + 1u - ap.window; }
    let lo = max(first, split * step.chunk);
    let hi = min(pos + 1u, (split + 1u) * step.chunk); // keys lo..hi-1

    let qb = t * ap.q_stride + kvh * gq;
    for (var i = lid; i < gq; i += WG) { qs[i] = q[qb + i] * ap.scale; }
    if (lid < group) { m_run[lid] = NEG; }
    var acc: array<f32, ACC>;
    for (var a = 0u; a < ACC; a++) { acc[a] = 0.0; }
    var l = 0.0; // running sum, kept by thread g < group
    workgroupBarrier();

    for (var c = lo; c < hi; c += TILE) {
        let n = min(TILE, hi - c);
        // Scores: thread (g, j) for key c + j of group head g.
        let g = lid / TILE;
        let j = lid % TILE;
        if (g < group) {
            var s = NEG;
            if (j < n) {
                let kb = (c + j) * kv_words + kvh * hd / 2u;
                let qg = g * hd;
                var d4 = vec2<f32>(0.0);
                for (var d = 0u; d < hd; d += 2u) {
                    d4 += vec2<f32>(qs[qg + d], qs[qg + d + 1u]) * unpack2x16float(k_cache[kb + d / 2u]);
                }
                s = d4.x + d4.y;
            }
            sc[lid] = s;
        }
        workgroupBarrier();
        // Online softmax, one thread per group head.
        if (lid < group) {
            var mx = m_run[lid];
            for (var jj = 0u; jj < n; jj++) { mx = max(mx, sc[lid * TILE + jj]); }
            var sum = 0.0;
            for (var jj = 0u; jj < n; jj++) {
                let e = exp(sc[lid * TILE + jj] - mx);
                sc[lid * TILE + jj] = e;
                sum += e;
            }
            let f = exp(m_run[lid] - mx);
            corr[lid] = f;
            l = l * f + sum;
            m_run[lid] = mx;
        }
        workgroupBarrier();
        // Values: thread owns (g, d) pairs lid, lid + WG, ...
        for (var a = 0u; a < ACC; a++) {
            let i = lid + a * WG;
            if (i < gq) {
                let gi = i / hd;
                let d = i % hd;
                var v = acc[a] * corr[gi];
                let vb = c * kv_words + kvh * hd / 2u + d / 2u;
                for (var jj = 0u; jj < n; jj++) {
                    v += sc[gi * TILE + jj] * unpack2x16float(v_cache[vb + jj * kv_words])[d & 1u];
                }
                acc[a] = v;
            }
        }
        workgroupBarrier();
    }

    let stride = hd + 2u;
    for (var a = 0u; a < ACC; a++) {
        let i = lid + a * WG;
        if (i < gq) {
            let h = kvh * group + i / hd;
            part[((t * ap.n_head + h) * step.splits + split) * stride + i % hd] = acc[a];
        }
    }
    if (lid < group) {
        let pb = ((t * ap.n_head + kvh * group + lid) * step.splits + split) * stride + hd;
        part[pb] = m_run[lid];
        part[pb + 1u] = l;
    }
}

@compute @workgroup_size(64)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t = wid.y;
    let hd = ap.head_dim;
    let stride = hd + 2u;
    let base = (t * ap.n_head + h) * step.splits * stride;
    var mx = NEG;
    for (var s = 0u; s < step.splits; s++) { mx = max(mx, part[base + s * stride + hd]); }
    var total = 0.0;
    for (var s = 0u; s < step.splits; s++) {
        total += part[base + s * stride + hd + 1u] * exp(part[base + s * stride + hd] - mx);
    }
    for (var d = lid; d < hd; d += 64u) {
        var v = 0.0;
        for (var s = 0u; s < step.splits; s++) {
            v += part[base + s * stride + d] * exp(part[base + s * stride + hd] - mx);
        }
        out[(t * ap.n_head + h) * hd + d] = v / total;
    }
}
