// Causal attention over the KV cache, split over the keys (flash-decoding): `partial` runs one
// workgroup per (kv head, key split, query token) and leaves an unnormalised result with its
// running max and sum; `combine` merges a token's splits per query head. One workgroup per
// head would leave a big GPU idle and serialise long contexts; splits keep every context
// length parallel. A kv head's workgroup serves all its query heads (grouped-query
// attention), so each key and value is read once per group. `window` > 0 limits a query to
// its last `window` positions (Gemma's sliding-window layers).
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
const MAX_GROUP: u32 = 8u;      // query heads per kv head
const MAX_GQ: u32 = 1024u;      // query heads per kv head x head_dim
const MAX_WPL: u32 = 4u;        // value words per lane (head_dim 256 / 2 / 32)
const NEG: f32 = -3.0e38;

var<workgroup> qs: array<f32, MAX_GQ>;
var<workgroup> red: array<f32, 2048>;   // partial dot products; at the end, slice sums
var<workgroup> sc: array<f32, 256>;     // [group head][key]: scores
var<workgroup> pr: array<f32, 256>;     // [group head][key]: probabilities
var<workgroup> m_run: array<f32, MAX_GROUP>;
var<workgroup> m_new: array<f32, MAX_GROUP>;
var<workgroup> corr: array<f32, MAX_GROUP>;

@compute @workgroup_size(256)
fn partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let kvh = wid.x;
    let split = wid.y;
    let t = wid.z;
    let hd = ap.head_dim;
    let group = ap.n_head / ap.n_kv;
    let gq = group * hd;
    let kv_words = ap.n_kv * hd / 2u;
    let head_words = kvh * hd / 2u;
    let pos = step.pos0 + t;
    var first = 0u;
    if (ap.window > 0u && pos + 1u > ap.window) { first = pos + 1u - ap.window; }
    let lo = max(first, split * step.chunk);
    let hi = min(pos + 1u, (split + 1u) * step.chunk); // keys lo..hi-1

    let qb = t * ap.q_stride + kvh * gq;
    for (var i = lid; i < gq; i += WG) { qs[i] = q[qb + i] * ap.scale; }
    if (lid < group) { m_run[lid] = NEG; }
    var l = 0.0; // running sum, kept by thread g < group
    workgroupBarrier();

    // Dot products: 8 threads per key; thread `share` takes words share, share + 8, ... of the
    // head, so neighbours read neighbouring words (coalesced, and no shared-memory bank
    // conflicts on q).
    let key = lid / TPK;
    let wpt = hd / 2u / TPK;
    let share = lid % TPK;
    // Values: slice `ks` takes keys ks, ks+8, ...; lane `vl` words vl, vl+32, ... of the
    // head; acc[wi * MAX_GROUP + g] holds group head g's two values of word vl + 32 wi.
    let ks = lid / 32u;
    let vl = lid % 32u;
    let hw = hd / 2u;
    var acc: array<vec2<f32>, 32>;
    for (var i = 0u; i < 32u; i++) { acc[i] = vec2<f32>(0.0); }
    // Constant loop bounds below let arrays live in registers and loads go out together.
    for (var c = lo; c < hi; c += TILE) {
        let n = min(TILE, hi - c);
        var s: array<f32, MAX_GROUP>;
        for (var g = 0u; g < MAX_GROUP; g++) { s[g] = 0.0; }
        let kb = (c + min(key, n - 1u)) * kv_words + head_words;
        for (var i = 0u; i < 16u; i++) {
            if (i < wpt) {
                let w = share + TPK * i;
                let kk = unpack2x16float(k_cache[kb + w]);
                for (var g = 0u; g < MAX_GROUP; g++) {
                    if (g < group) { s[g] += qs[g * hd + 2u * w] * kk.x + qs[g * hd + 2u * w + 1u] * kk.y; }
                }
            }
        }
        for (var g = 0u; g < MAX_GROUP; g++) {
            if (g < group) { red[g * WG + lid] = s[g]; }
        }
        workgroupBarrier();
        let g = lid / TILE;
        let j = lid % TILE;
        if (g < group) {
            var d = 0.0;
            for (var p = 0u; p < TPK; p++) { d += red[g * WG + j * TPK + p]; }
            sc[lid] = select(NEG, d, j < n);
        }
        workgroupBarrier();
        if (g < group) {
            var mx = vec4<f32>(m_run[g]);
            for (var jj = 0u; jj < TILE; jj += 4u) {
                let b = g * TILE + jj;
                mx = max(mx, vec4<f32>(sc[b], sc[b + 1u], sc[b + 2u], sc[b + 3u]));
            }
            let m = max(max(mx.x, mx.y), max(mx.z, mx.w));
            pr[lid] = select(0.0, exp(sc[lid] - m), j < n);
            if (j == 0u) {
                m_new[g] = m;
                corr[g] = exp(m_run[g] - m);
            }
        }
        workgroupBarrier();
        if (lid < group) {
            var sum = vec4<f32>(0.0);
            for (var jj = 0u; jj < TILE; jj += 4u) {
                let b = lid * TILE + jj;
                sum += vec4<f32>(pr[b], pr[b + 1u], pr[b + 2u], pr[b + 3u]);
            }
            l = l * corr[lid] + sum.x + sum.y + sum.z + sum.w;
            m_run[lid] = m_new[lid];
        }
        for (var wi = 0u; wi < MAX_WPL; wi++) {
            let w = vl + 32u * wi;
            if (w < hw) {
                for (var g = 0u; g < MAX_GROUP; g++) {
                    if (g < group) { acc[wi * MAX_GROUP + g] *= corr[g]; }
                }
                // Keys past n have p = 0 and read a valid row instead of branching.
                for (var i = 0u; i < KPS; i++) {
                    let jj = ks + SLICES * i;
                    let vv = unpack2x16float(v_cache[(c + min(jj, n - 1u)) * kv_words + head_words + w]);
                    for (var g = 0u; g < MAX_GROUP; g++) {
                        if (g < group) { acc[wi * MAX_GROUP + g] += pr[g * TILE + jj] * vv; }
                    }
                }
            }
        }
        workgroupBarrier();
    }

    // Sum the slices, one group head at a time (red holds [slice][head_dim]).
    let stride = hd + 2u;
    for (var g = 0u; g < MAX_GROUP; g++) {
        if (g < group) {
            for (var wi = 0u; wi < MAX_WPL; wi++) {
                let w = vl + 32u * wi;
                if (w < hw) {
                    red[ks * hd + 2u * w] = acc[wi * MAX_GROUP + g].x;
                    red[ks * hd + 2u * w + 1u] = acc[wi * MAX_GROUP + g].y;
                }
            }
            workgroupBarrier();
            let h = kvh * group + g;
            let pb = ((t * ap.n_head + h) * step.splits + split) * stride;
            for (var d = lid; d < hd; d += WG) {
                var v = 0.0;
                for (var k = 0u; k < SLICES; k++) { v += red[k * hd + d]; }
                part[pb + d] = v;
            }
            if (lid == 0u) {
                part[pb + hd] = m_run[g];
            }
            workgroupBarrier();
        }
    }
    if (lid < group) {
        let pb = ((t * ap.n_head + kvh * group + lid) * step.splits + split) * stride + hd;
        part[pb + 1u] = l;
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
