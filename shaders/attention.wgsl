// Causal attention over the KV cache, split over the keys (flash-decoding): `partial` runs one
// workgroup per (query head, key split, query token) and leaves an unnormalised result with
// its running max and sum; `combine` merges a token's splits per head. One workgroup per
// head would leave a big GPU idle and serialise long contexts; splits keep every context
// length parallel. Query heads sharing a kv head (grouped-query attention) each read it:
// small models have one to three kv heads, and a workgroup per query head is worth more
// parallelism than the repeated reads (which hit the cache) cost. `window` > 0 limits a
// query to its last `window` positions (Gemma's sliding-window layers).
//
// Within a workgroup, keys go in tiles of 32: 8 threads share each key's dot products, every
// (head, key) pair gets its probability in parallel, and 8 key slices accumulate the values
// (summed once at the end). No loop waits on one memory load after another.

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
const TPK: u32 = WG / TILE;     // threads per key in the dot products
const SLICES: u32 = 8u;         // key slices in the value pass
const KPS: u32 = TILE / SLICES; // keys per slice per tile
const MAX_WPL: u32 = 4u;        // value words per lane (head_dim 256 / 2 / 32)
const NEG: f32 = -3.0e38;

var<workgroup> qs: array<f32, 256>;
var<workgroup> red: array<f32, 2048>;   // partial dot products; at the end, slice sums
var<workgroup> sc: array<f32, TILE>;    // scores
var<workgroup> pr: array<f32, TILE>;    // probabilities
var<workgroup> m_run: f32;
var<workgroup> m_new: f32;
var<workgroup> corr: f32;

@compute @workgroup_size(256)
fn partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let split = wid.y;
    let t = wid.z;
    let hd = ap.head_dim;
    let kvh = h / (ap.n_head / ap.n_kv);
    let kv_words = ap.n_kv * hd / 2u;
    let head_words = kvh * hd / 2u;
    let pos = step.pos0 + t;
    var first = 0u;
    if (ap.window > 0u && pos + 1u > ap.window) { first = pos + 1u - ap.window; }
    let lo = max(first, split * step.chunk);
    let hi = min(pos + 1u, (split + 1u) * step.chunk); // keys lo..hi-1

    let qb = t * ap.q_stride + h * hd;
    for (var i = lid; i < hd; i += WG) { qs[i] = q[qb + i] * ap.scale; }
    if (lid == 0u) { m_run = NEG; }
    var l = 0.0; // running sum, kept by thread 0
    workgroupBarrier();

    // Dot products: 8 threads per key; thread `share` takes words share, share + 8, ... of the
    // head, so neighbours read neighbouring words (coalesced, and no shared-memory bank
    // conflicts on q).
    let key = lid / TPK;
    let wpt = hd / 2u / TPK;
    let share = lid % TPK;
    // Values: slice `ks` takes keys ks, ks+8, ...; lane `vl` words vl, vl+32, ... of the head.
    let ks = lid / 32u;
    let vl = lid % 32u;
    let hw = hd / 2u;
    var acc: array<vec2<f32>, MAX_WPL>;
    for (var i = 0u; i < MAX_WPL; i++) { acc[i] = vec2<f32>(0.0); }
    // Constant loop bounds below let arrays live in registers and loads go out together.
    for (var c = lo; c < hi; c += TILE) {
        let n = min(TILE, hi - c);
        let kb = (c + min(key, n - 1u)) * kv_words + head_words;
        var s = 0.0;
        for (var i = 0u; i < 16u; i++) {
            if (i < wpt) {
                let w = share + TPK * i;
                let kk = unpack2x16float(k_cache[kb + w]);
                s += qs[2u * w] * kk.x + qs[2u * w + 1u] * kk.y;
            }
        }
        red[lid] = s;
        workgroupBarrier();
        if (lid < TILE) {
            var d = 0.0;
            for (var p = 0u; p < TPK; p++) { d += red[lid * TPK + p]; }
            sc[lid] = select(NEG, d, lid < n);
        }
        workgroupBarrier();
        if (lid < TILE) {
            var mx = vec4<f32>(m_run);
            for (var jj = 0u; jj < TILE; jj += 4u) {
                mx = max(mx, vec4<f32>(sc[jj], sc[jj + 1u], sc[jj + 2u], sc[jj + 3u]));
            }
            let m = max(max(mx.x, mx.y), max(mx.z, mx.w));
            pr[lid] = select(0.0, exp(sc[lid] - m), lid < n);
            if (lid == 0u) {
                m_new = m;
                corr = exp(m_run - m);
            }
        }
        workgroupBarrier();
        if (lid == 0u) {
            var sum = vec4<f32>(0.0);
            for (var jj = 0u; jj < TILE; jj += 4u) { sum += vec4<f32>(pr[jj], pr[jj + 1u], pr[jj + 2u], pr[jj + 3u]); }
            l = l * corr + sum.x + sum.y + sum.z + sum.w;
            m_run = m_new;
        }
        for (var wi = 0u; wi < MAX_WPL; wi++) {
            let w = vl + 32u * wi;
            if (w < hw) {
                var a = acc[wi] * corr;
                // Keys past n have p = 0 and read a valid row instead of branching.
                for (var i = 0u; i < KPS; i++) {
                    let jj = ks + SLICES * i;
                    a += pr[jj] * unpack2x16float(v_cache[(c + min(jj, n - 1u)) * kv_words + head_words + w]);
                }
                acc[wi] = a;
            }
        }
        workgroupBarrier();
    }

    // Sum the slices (red holds [slice][head_dim]).
    for (var wi = 0u; wi < MAX_WPL; wi++) {
        let w = vl + 32u * wi;
        if (w < hw) {
            red[ks * hd + 2u * w] = acc[wi].x;
            red[ks * hd + 2u * w + 1u] = acc[wi].y;
        }
    }
    workgroupBarrier();
    let stride = hd + 2u;
    let pb = ((t * ap.n_head + h) * step.splits + split) * stride;
    for (var d = lid; d < hd; d += WG) {
        var v = 0.0;
        for (var k = 0u; k < SLICES; k++) { v += red[k * hd + d]; }
        part[pb + d] = v;
    }
    if (lid == 0u) {
        part[pb + hd] = m_run;
        part[pb + hd + 1u] = l;
    }
}

const CWG: u32 = 64u;
const MAX_SPLITS: u32 = 256u;
var<workgroup> wsplit: array<f32, MAX_SPLITS>;
var<workgroup> cred: array<f32, CWG>;

@compute @workgroup_size(64)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t = wid.y;
    let hd = ap.head_dim;
    let stride = hd + 2u;
    let base = (t * ap.n_head + h) * step.splits * stride;
    var mx = NEG;
    for (var s = lid; s < step.splits; s += CWG) { mx = max(mx, part[base + s * stride + hd]); }
    cred[lid] = mx;
    workgroupBarrier();
    for (var k = CWG / 2u; k > 0u; k >>= 1u) {
        if (lid < k) { cred[lid] = max(cred[lid], cred[lid + k]); }
        workgroupBarrier();
    }
    mx = cred[0];
    workgroupBarrier();
    var total = 0.0;
    for (var s = lid; s < step.splits; s += CWG) {
        let w = exp(part[base + s * stride + hd] - mx);
        wsplit[s] = w;
        total += part[base + s * stride + hd + 1u] * w;
    }
    cred[lid] = total;
    workgroupBarrier();
    for (var k = CWG / 2u; k > 0u; k >>= 1u) {
        if (lid < k) { cred[lid] += cred[lid + k]; }
        workgroupBarrier();
    }
    let inv = 1.0 / cred[0];
    for (var d = lid; d < hd; d += CWG) {
        // Four splits per iteration keep four independent loads in flight.
        var v = vec4<f32>(0.0);
        var s = 0u;
        for (; s + 4u <= step.splits; s += 4u) {
            let b = base + s * stride + d;
            v += vec4<f32>(wsplit[s], wsplit[s + 1u], wsplit[s + 2u], wsplit[s + 3u])
                * vec4<f32>(part[b], part[b + stride], part[b + 2u * stride], part[b + 3u * stride]);
        }
        for (; s < step.splits; s++) { v.x += wsplit[s] * part[base + s * stride + d]; }
        out[(t * ap.n_head + h) * hd + d] = (v.x + v.y + v.z + v.w) * inv;
    }
}
