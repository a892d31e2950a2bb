// Causal attention over the KV cache, split over the keys (flash-decoding): `partial` runs one
// workgroup per (block of queries, key split, block of tokens) and leaves an unnormalised
// result with its running max and sum; `combine` merges a token's splits per head. One
// workgroup per head would leave a big GPU idle and serialise long contexts; splits keep
// every context length parallel. `window` > 0 limits a query to its last `window` positions
// (Gemma's sliding-window layers). attention_projected.wgsl, appended where a pipeline
// wants it, adds a decode entry that makes its own q, k and v; both share `attend`.
//
// A block is `ap.heads` query heads of one kv group (grouped-query attention) times
// `ap.tokens` consecutive tokens, at most HEADS queries (a constant the engine prepends):
// they all read the same keys and values, so the block reads each once. Decode on GPUs uses
// blocks of one query, because small models have one to three kv heads and the parallelism
// is worth more than the repeated reads (which hit the cache); prefill and CPU adapters,
// where every workgroup's barriers cost time, use larger blocks.
//
// Within a workgroup, keys go in tiles of TILE (a constant the engine prepends: 32, or 64
// for decode's one-query blocks of heads up to 64 wide, whose 4 threads per key still load
// 8 words each): 256 / TILE threads share each key's dot products, every (query, key) pair
// gets its probability in parallel, and each thread accumulates one value word (two
// dimensions) of every block query over a slice of the keys (slices summed once at the
// end). No loop waits on one memory load after another. Private arrays are indexed by block
// query only, so with one query per block (GPUs) they are single registers: drivers may keep
// an indexed array in local memory, at a large cost.

#include attention_common
#include attention_partials
#include workgroup_sum
@group(0) @binding(7) var<storage, read> norm_w: array<f32>;
@group(0) @binding(8) var<storage, read> inv_freq: array<f32>;

const WG: u32 = 256u;
const TPK: u32 = WG / TILE;     // threads per key in the dot products

var<workgroup> qs: array<f32, MAX_HEAD_VALUES>; // [block query][dim]
var<workgroup> kc: array<f32, FUSED_DIM>;       // fused decode: this step's key, normed and rotated
var<workgroup> vc: array<f32, FUSED_DIM>;       // fused decode: this step's value
var<workgroup> red: array<f32, 2048>;           // partial dot products; at the end, slice sums
var<workgroup> sc: array<f32, HEADS * TILE>;    // [block query][key]: scores
var<workgroup> pr: array<f32, HEADS * TILE>;    // [block query][key]: probabilities
var<workgroup> m_run: array<f32, HEADS>;
var<workgroup> m_new: array<f32, HEADS>;
var<workgroup> corr: array<f32, HEADS>;

#include rotary

// Fused decode prologue (rope_kv.wgsl's work for this head): this invocation's dimension
// of q and, with `own`, of the kv head's key and value (`v`: raw, as the QKV projection made
// them), and the q and k norm weights of that dimension (`nw`): q/k norms, rotation, and
// q's attention scale. Callers load everything from memory before calling it, so the loads
// wait once, together, before its first barrier. Uniform control flow: every invocation
// calls it.
fn prepare(v: vec3<f32>, nw: vec2<f32>, own: bool, pos: u32) {
    let lid = local_id;
    let hd = ap.head_dim;
    let normed = (ap.flags & 4u) != 0u;
    let qv = v.x;
    let kv = v.y;
    let vv = v.z;
    let rotating = lid < ap.n_rot / 2u;
    let r = rotation(min(lid, ap.n_rot / 2u - 1u), pos, ap.n_rot, (ap.flags & 2u) != 0u);
    if (lid < hd) {
        qs[lid] = qv;
        if (own) {
            kc[lid] = kv;
            vc[lid] = vv;
        }
    }
    if (normed) {
        let sq = workgroup_sum(vec2<f32>(select(0.0, qv * qv, lid < hd), select(0.0, kv * kv, own && lid < hd)), lid);
        if (lid < hd) {
            qs[lid] *= inverseSqrt(sq.x / f32(hd) + ap.eps) * nw.x;
            if (own) { kc[lid] *= inverseSqrt(sq.y / f32(hd) + ap.eps) * nw.y; }
        }
    }
    workgroupBarrier();
    if (rotating) {
        let xq = rotated(r, qs[r.i0], qs[r.i1]);
        qs[r.i0] = xq.x;
        qs[r.i1] = xq.y;
        if (own) {
            let xk = rotated(r, kc[r.i0], kc[r.i1]);
            kc[r.i0] = xk.x;
            kc[r.i1] = xk.y;
        }
    }
    workgroupBarrier();
    if (lid < hd) {
        qs[lid] *= ap.scale;
        // This step's key and value at the cache's f16 precision, as every later step sees
        // them (and as llama.cpp, which stores before attending).
        if (own) {
            kc[lid] = unpack2x16float(pack2x16float(vec2<f32>(kc[lid], 0.0))).x;
            vc[lid] = unpack2x16float(pack2x16float(vec2<f32>(vc[lid], 0.0))).x;
        }
    }
}

var<private> local_id: u32;

// This step's key (kc) and/or value (vc), rounded to f16 by prepare, into the cache rows'
// words from `dst` on.
fn append_own(dst: u32, key: bool, value: bool) {
    for (var w = local_id; w < ap.head_dim / 2u; w += WG) {
        if (key) { k_cache[dst + w] = pack2x16float(vec2<f32>(kc[2u * w], kc[2u * w + 1u])); }
        if (value) { v_cache[dst + w] = pack2x16float(vec2<f32>(vc[2u * w], vc[2u * w + 1u])); }
    }
}

// A thread's cache words of one tile, loaded before any is used, so a tile waits for
// memory once: words share + i·TPK of its key and word vw of the values of tile keys
// ks + i·slices, i < 16, each four only where the head or the tile has them for this
// thread. (Heads are at most 256 wide, which the engine checks at load, so with tiles of
// 32 or 64 keys sixteen words cover a thread's share.) Raw
// words: this step's own key and value (kc, vc) replace theirs only where used, so the
// first tile's loads go out before the prologue makes them. Named vectors, not arrays
// (see the header).
struct TileWords { k0: vec4<u32>, k1: vec4<u32>, k2: vec4<u32>, k3: vec4<u32>, v0: vec4<u32>, v1: vec4<u32>, v2: vec4<u32>, v3: vec4<u32> }

// Key words w, w + TPK, w + 2·TPK, w + 3·TPK at cache word kb (past the head's hw words, its
// last word again, so callers need no branch).
fn key_words(kb: u32, w: u32, hw: u32) -> vec4<u32> {
    let last = hw - 1u;
    return vec4<u32>(k_cache[kb + min(w, last)], k_cache[kb + min(w + TPK, last)], k_cache[kb + min(w + 2u * TPK, last)],
                     k_cache[kb + min(w + 3u * TPK, last)]);
}

// Word `word` of the values of tile keys j, j + slices, j + 2·slices, j + 3·slices (the tile
// starts at position c and holds n keys; past n, the last key is read again).
fn value_words(c: u32, j: u32, slices: u32, n: u32, kv_words: u32, word: u32) -> vec4<u32> {
    let last = n - 1u;
    return vec4<u32>(v_cache[(c + min(j, last)) * kv_words + word], v_cache[(c + min(j + slices, last)) * kv_words + word],
                     v_cache[(c + min(j + 2u * slices, last)) * kv_words + word], v_cache[(c + min(j + 3u * slices, last)) * kv_words + word]);
}

// The tile at c's words for this thread (its key's words start at kb, its value word at vb).
fn tile_words(c: u32, n: u32, kb: u32, share: u32, hw: u32, ks: u32, slices: u32, kv_words: u32, vb: u32) -> TileWords {
    var t: TileWords;
    t.k0 = key_words(kb, share, hw);
    if (4u * TPK < hw) { t.k1 = key_words(kb, share + 4u * TPK, hw); }
    if (8u * TPK < hw) {
        t.k2 = key_words(kb, share + 8u * TPK, hw);
        t.k3 = key_words(kb, share + 12u * TPK, hw);
    }
    t.v0 = value_words(c, ks, slices, n, kv_words, vb);
    if (4u * slices < TILE) { t.v1 = value_words(c, ks + 4u * slices, slices, n, kv_words, vb); }
    if (8u * slices < TILE) {
        t.v2 = value_words(c, ks + 8u * slices, slices, n, kv_words, vb);
        t.v3 = value_words(c, ks + 12u * slices, slices, n, kv_words, vb);
    }
    return t;
}

// Word w of a key from its raw cache word, or of this step's key (kc); zero past hw.
fn key_of(raw: u32, w: u32, hw: u32, from_kc: bool) -> vec2<f32> {
    let wi = min(w, hw - 1u);
    var kk = unpack2x16float(raw);
    if (from_kc) { kk = vec2<f32>(kc[2u * wi], kc[2u * wi + 1u]); }
    return select(vec2<f32>(0.0), kk, w < hw);
}

// Word w's share of a block query's dot product (its q values start at qb in qs).
fn q_dot(qb: u32, w: u32, hw: u32, kk: vec2<f32>) -> f32 {
    let qi = qb + 2u * min(w, hw - 1u);
    return qs[qi] * kk.x + qs[qi + 1u] * kk.y;
}

// A block query's dot product with key words w, w + TPK, w + 2·TPK, w + 3·TPK (raw).
fn key_dot4(qb: u32, w: u32, hw: u32, raw: vec4<u32>, from_kc: bool) -> f32 {
    return q_dot(qb, w, hw, key_of(raw.x, w, hw, from_kc)) + q_dot(qb, w + TPK, hw, key_of(raw.y, w + TPK, hw, from_kc))
        + q_dot(qb, w + 2u * TPK, hw, key_of(raw.z, w + 2u * TPK, hw, from_kc))
        + q_dot(qb, w + 3u * TPK, hw, key_of(raw.w, w + 3u * TPK, hw, from_kc));
}

// Block query g's probability of tile key j; zero past the tile.
fn prob(g: u32, j: u32) -> f32 {
    return select(0.0, pr[g * TILE + min(j, TILE - 1u)], j < TILE);
}

// Where a thread's value words belong: the tile (at c, n keys), its word vw of the head,
// and this step's own value (vc) at `pos` where the workgroup made it.
struct ValueSite { c: u32, n: u32, own: bool, pos: u32, vw: u32 }

// The value word of tile key j from its raw cache word, or this step's own value.
fn value_of(raw: u32, j: u32, at: ValueSite) -> vec2<f32> {
    let row = at.c + min(j, at.n - 1u);
    return select(unpack2x16float(raw), vec2<f32>(vc[2u * at.vw], vc[2u * at.vw + 1u]), at.own && row == at.pos);
}

// Block query g's share of the values of tile keys j, j + slices, j + 2·slices,
// j + 3·slices (raw), each weighted by its key's probability.
fn weigh4(g: u32, j: u32, slices: u32, raw: vec4<u32>, at: ValueSite) -> vec2<f32> {
    return prob(g, j) * value_of(raw.x, j, at) + prob(g, j + slices) * value_of(raw.y, j + slices, at)
        + prob(g, j + 2u * slices) * value_of(raw.z, j + 2u * slices, at) + prob(g, j + 3u * slices) * value_of(raw.w, j + 3u * slices, at);
}

// How a workgroup's threads share a block's work: TPK threads per key in the dot products
// (thread `share` of key `key` takes words share, share + TPK, ... of the head, so
// neighbours read neighbouring words: coalesced, and no shared-memory bank conflicts on q);
// for the values, thread (slice ks, word vw) takes keys ks, ks + slices, ... of each tile
// and accumulates word vw (two dimensions) of every block query (threads past slices x
// words idle). vb: its value word in a cache row.
struct Roles { key: u32, share: u32, hw: u32, slices: u32, ks: u32, vw: u32, vb: u32 }

fn roles(b: Block) -> Roles {
    let lid = local_id;
    let hw = ap.head_dim / 2u;
    return Roles(lid / TPK, lid % TPK, hw, WG / hw, lid / hw, lid % hw, b.head_words + lid % hw);
}

// The block's first tile of words. Callers load it before their prologue's barriers
// (decode's splits are one tile long); with no keys in the split, nothing uses it.
fn first_tile(b: Block) -> TileWords {
    let o = roles(b);
    let n0 = select(1u, min(TILE, b.hi - b.lo), b.hi > b.lo);
    return tile_words(b.lo, n0, (b.lo + min(o.key, n0 - 1u)) * b.kv_words + b.head_words, o.share, o.hw, o.ks, o.slices, b.kv_words, o.vb);
}

@compute @workgroup_size(256)
fn partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    local_id = lid;
    let hd = ap.head_dim;
    let b = block(wid);
    let group = ap.n_head / ap.n_kv;
    let kvh = b.h0 / group;
    let pos = step.pos0 + b.t0;
    let fused = (ap.flags & 1u) != 0u;
    let first = first_tile(b);
    // Fused decode (one query per block): the workgroup whose split holds this step's
    // position makes its key (and value) itself; the first query head of each kv group also
    // appends them to the cache.
    let own = fused && pos >= b.lo && pos < b.hi;
    if (fused) {
        let qb = b.t0 * ap.q_stride + b.h0 * hd;
        let kb = b.t0 * ap.q_stride + (ap.n_head + kvh) * hd;
        let i = min(lid, hd - 1u);
        var nw = vec2<f32>(1.0);
        if ((ap.flags & 4u) != 0u) { nw = vec2<f32>(norm_w[i], norm_w[hd + i]); }
        prepare(vec3<f32>(q[qb + i], q[kb + i], q[kb + ap.n_kv * hd + i]), nw, own, pos);
        if (own && b.h0 % group == 0u) { append_own(pos * b.kv_words + b.head_words, true, true); }
    } else {
        for (var i = lid; i < b.members * hd; i += WG) {
            let m = member(i / hd, b.h0, b.t0);
            qs[i] = q[m.y * ap.q_stride + m.x * hd + i % hd] * ap.scale;
        }
    }
    // With one split this is the whole attention: it writes the result (no combine runs).
    attend(b, wid.y, own, pos, first, step.splits == 1u);
}

// The block's queries (in qs) against the keys b.lo..b.hi-1, from the tile `first` on: this
// split's partial results, or with `whole` (one split) the normalised output. `own`: this
// step's key and value at `pos` are in kc and vc. Every invocation must call it.
fn attend(b: Block, split: u32, own: bool, pos: u32, first: TileWords, whole: bool) {
    let lid = local_id;
    let hd = ap.head_dim;
    let members = b.members;
    let o = roles(b);
    let hw = o.hw;
    let slices = o.slices;
    let ks = o.ks;
    if (lid < members) { m_run[lid] = NEG; }
    var l = 0.0; // running sum, kept by thread g < members
    workgroupBarrier();

    var acc: array<vec2<f32>, HEADS>;
    for (var g = 0u; g < HEADS; g++) { acc[g] = vec2<f32>(0.0); }
    // (acc and s are indexed by block query: see the header.)
    for (var c = b.lo; c < b.hi; c += TILE) {
        let n = min(TILE, b.hi - c);
        var s: array<f32, HEADS>;
        let kb = (c + min(o.key, n - 1u)) * b.kv_words + b.head_words;
        let from_kc = own && c + min(o.key, n - 1u) == pos;
        var t = first;
        if (c > b.lo) { t = tile_words(c, n, kb, o.share, hw, ks, slices, b.kv_words, o.vb); }
        for (var g = 0u; g < HEADS; g++) {
            if (g < members) {
                let qb = g * hd;
                s[g] = key_dot4(qb, o.share, hw, t.k0, from_kc);
                if (4u * TPK < hw) { s[g] += key_dot4(qb, o.share + 4u * TPK, hw, t.k1, from_kc); }
                if (8u * TPK < hw) {
                    s[g] += key_dot4(qb, o.share + 8u * TPK, hw, t.k2, from_kc) + key_dot4(qb, o.share + 12u * TPK, hw, t.k3, from_kc);
                }
            }
        }
        for (var g = 0u; g < HEADS; g++) {
            if (g < members) { red[g * WG + lid] = s[g]; }
        }
        workgroupBarrier();
        let g = lid / TILE;
        let j = lid % TILE;
        // Key c + j within this query's causal (and sliding) window?
        let pos_g = step.pos0 + member(g, b.h0, b.t0).y;
        let seen = j < n && c + j >= first_key(pos_g) && c + j <= pos_g;
        if (g < members) {
            var d = 0.0;
            for (var p = 0u; p < TPK; p++) { d += red[g * WG + j * TPK + p]; }
            sc[lid] = select(NEG, d, seen);
        }
        workgroupBarrier();
        if (g < members) {
            var mx = vec4<f32>(m_run[g]);
            for (var jj = 0u; jj < TILE; jj += 4u) {
                let i = g * TILE + jj;
                mx = max(mx, vec4<f32>(sc[i], sc[i + 1u], sc[i + 2u], sc[i + 3u]));
            }
            let m = max(max(mx.x, mx.y), max(mx.z, mx.w));
            pr[lid] = select(0.0, exp(sc[lid] - m), seen);
            if (j == 0u) {
                m_new[g] = m;
                corr[g] = exp(m_run[g] - m);
            }
        }
        workgroupBarrier();
        if (lid < members) {
            var sum = vec4<f32>(0.0);
            for (var jj = 0u; jj < TILE; jj += 4u) {
                let i = lid * TILE + jj;
                sum += vec4<f32>(pr[i], pr[i + 1u], pr[i + 2u], pr[i + 3u]);
            }
            l = l * corr[lid] + sum.x + sum.y + sum.z + sum.w;
            m_run[lid] = m_new[lid];
        }
        if (ks < slices) {
            for (var g = 0u; g < HEADS; g++) {
                if (g < members) { acc[g] *= corr[g]; }
            }
            // Keys past n have p = 0 and read a valid row instead of branching.
            let at = ValueSite(c, n, own, pos, o.vw);
            for (var g = 0u; g < HEADS; g++) {
                if (g < members) {
                    acc[g] += weigh4(g, ks, slices, t.v0, at);
                    if (4u * slices < TILE) { acc[g] += weigh4(g, ks + 4u * slices, slices, t.v1, at); }
                    if (8u * slices < TILE) {
                        acc[g] += weigh4(g, ks + 8u * slices, slices, t.v2, at) + weigh4(g, ks + 12u * slices, slices, t.v3, at);
                    }
                }
            }
        }
        workgroupBarrier();
    }

    // Sum the slices, one block query at a time (red holds [slice][head_dim]).
    if (lid < members) { corr[lid] = l; } // now each block query's sum
    let stride = part_stride(hd);
    for (var g = 0u; g < HEADS; g++) {
        if (g < members) {
            if (ks < slices) {
                red[ks * hd + 2u * o.vw] = acc[g].x;
                red[ks * hd + 2u * o.vw + 1u] = acc[g].y;
            }
            workgroupBarrier();
            let m = member(g, b.h0, b.t0);
            let pb = ((m.y * ap.n_head + m.x) * step.splits + split) * stride;
            let ob = (m.y * ap.n_head + m.x) * hd;
            for (var d = lid; d < hd; d += WG) {
                var v = 0.0;
                for (var k = 0u; k < slices; k++) { v += red[k * hd + d]; }
                if (whole) { out[ob + d] = v / corr[g]; } else { part[pb + d] = v; }
            }
            if (lid == 0u && !whole) {
                part[pb + hd] = m_run[g];
                part[pb + hd + 1u] = corr[g];
            }
            workgroupBarrier();
        }
    }
}

// One workgroup per (token, head, 64 dimensions of the head). Each thread of a 64-thread
// slice takes every fourth split of one dimension, eight splits' loads in flight at a time:
// a token's splits are read in one or two memory round trips, not one per split.
const CWG: u32 = 256u;
const CDIMS: u32 = 64u;
const MAX_SPLITS: u32 = 256u;
var<workgroup> wsplit: array<f32, MAX_SPLITS>;
var<workgroup> cred: array<f32, CWG>;

// Split s's share of dimension d: its weight times its accumulator (zero past the splits).
fn split_value(base: u32, stride: u32, s: u32, d: u32) -> f32 {
    let si = min(s, step.splits - 1u);
    return select(0.0, wsplit[si] * part[base + si * stride + d], s < step.splits);
}

@compute @workgroup_size(256)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let hd = ap.head_dim;
    let parts = (hd + CDIMS - 1u) / CDIMS;
    let h = wid.x / parts;
    let t = wid.y;
    let stride = part_stride(hd);
    let base = (t * ap.n_head + h) * step.splits * stride;
    // Splits' maxima and sums, one split per thread (at most MAX_SPLITS = CWG of them).
    let mine = lid < step.splits;
    let sb = base + min(lid, step.splits - 1u) * stride + hd;
    let m = select(NEG, part[sb], mine);
    cred[lid] = m;
    workgroupBarrier();
    for (var k = CWG / 2u; k > 0u; k >>= 1u) {
        if (lid < k) { cred[lid] = max(cred[lid], cred[lid + k]); }
        workgroupBarrier();
    }
    let mx = cred[0];
    workgroupBarrier();
    let w = select(0.0, exp(m - mx), mine);
    wsplit[lid] = w;
    cred[lid] = w * part[sb + 1u];
    workgroupBarrier();
    for (var k = CWG / 2u; k > 0u; k >>= 1u) {
        if (lid < k) { cred[lid] += cred[lid + k]; }
        workgroupBarrier();
    }
    let inv = 1.0 / cred[0];
    workgroupBarrier();
    let slices = CWG / CDIMS;
    let d = (wid.x % parts) * CDIMS + lid % CDIMS;
    let dd = min(d, hd - 1u);
    var v = 0.0;
    for (var s = lid / CDIMS; s < step.splits; s += 8u * slices) {
        v += split_value(base, stride, s, dd) + split_value(base, stride, s + slices, dd)
            + split_value(base, stride, s + 2u * slices, dd) + split_value(base, stride, s + 3u * slices, dd)
            + split_value(base, stride, s + 4u * slices, dd) + split_value(base, stride, s + 5u * slices, dd)
            + split_value(base, stride, s + 6u * slices, dd) + split_value(base, stride, s + 7u * slices, dd);
    }
    cred[lid] = v;
    workgroupBarrier();
    if (lid < CDIMS && d < hd) {
        var sum = 0.0;
        for (var k = 0u; k < slices; k++) { sum += cred[k * CDIMS + lid]; }
        out[(t * ap.n_head + h) * hd + d] = sum * inv;
    }
}
