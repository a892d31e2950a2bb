// Prefill attention on GPUs, tiled like a matmul (flash attention): a workgroup takes a block
// of BQ = 64 queries (query heads of one kv group x consecutive tokens) and walks its key
// split in tiles of BK = 32 keys. Each thread owns 4 queries x 2 keys of a tile's scores and
// 4 queries x 4*OM dimensions of the output, in registers; queries, keys and values pass
// through workgroup memory in stages (each stage's loads issued before the stage before it
// computes; where one score stage holds the whole head, DC = HD, the queries once per block,
// not per tile: SmolLM2's 64-wide heads 2.92 -> 2.45 ms in the last 256-token chunk of 1024
// on an H100), and the probabilities go from the score owners to the output owners through
// it. Per tile that is a few barriers for 64 x 32 pairs, where attention.wgsl's `partial`
// spends four on at most 8 queries. Results are the same as `partial`'s: per (token, head,
// split) unnormalised sums with their max and sum for the combine, or with one split the
// normalised output.
//
// The engine prepends HD (the head dimension, a multiple of 16, at most 256), DC (head
// dimensions per score stage, dividing HD) and VK (keys per value stage, 4 to 32), sized to
// the adapter's workgroup memory.

#include attention_common
#include attention_partials

const BQ: u32 = 64u;
const BK: u32 = 32u;
const HD4: u32 = HD / 4u;
const OM: u32 = (HD + 63u) / 64u;          // vec4s of output dimensions per thread and query
const QR: u32 = DC / 16u;                  // query groups of 4 (and key words) per thread per stage
const V_WORDS: u32 = VK * HD / 2u;         // value words per stage
const VR: u32 = (V_WORDS + 255u) / 256u;   // value words per thread per stage
// With one score stage the queries stay in qs from the block's first tile to its last.
const KEEP_Q: bool = DC == HD;

var<workgroup> qs: array<vec4<f32>, DC * 16u>; // [dim][query / 4]
var<workgroup> ks: array<vec2<f32>, DC * 17u>; // [dim][key / 2], rows padded against bank conflicts
var<workgroup> vs: array<vec4<f32>, VK * HD4>; // [key][dim / 4]
// [key][query / 4]: probabilities; before them the row maxima and at the end the row sums,
// [thread column][query / 4].
var<workgroup> ps: array<vec4<f32>, BK * 17u>;

// Four queries' outputs (a: query 4 ty, ... d: 4 ty + 3) for four dimensions: a struct of
// registers, not an array (drivers may put an indexed array in local memory).
struct Acc { a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32> }

fn acc_add(o: Acc, p: vec4<f32>, v: vec4<f32>) -> Acc {
    return Acc(fma(vec4<f32>(p.x), v, o.a), fma(vec4<f32>(p.y), v, o.b), fma(vec4<f32>(p.z), v, o.c), fma(vec4<f32>(p.w), v, o.d));
}

// Four keys' probabilities (columns of p) times their values at vs[v], vs[v + HD4], ...
fn acc_add4(o: Acc, p: mat4x4<f32>, v: u32) -> Acc {
    let v0 = vs[v];
    let v1 = vs[v + HD4];
    let v2 = vs[v + 2u * HD4];
    let v3 = vs[v + 3u * HD4];
    return acc_add(acc_add(acc_add(acc_add(o, p[0], v0), p[1], v1), p[2], v2), p[3], v3);
}

fn acc_scale(o: Acc, f: vec4<f32>) -> Acc {
    return Acc(o.a * f.x, o.b * f.y, o.c * f.z, o.d * f.w);
}

// Query i's four dimensions.
fn acc_row(o: Acc, i: u32) -> vec4<f32> {
    return select(select(select(o.d, o.c, i == 2u), o.b, i == 1u), o.a, i == 0u);
}

// Query group e of a score stage (query e % BQ, dimensions dc + 4 (e / BQ) ..+3), scaled;
// past the block's live queries, the last one again (its scores are never written).
fn q_group(b: Block, e: u32, dc: u32) -> vec4<f32> {
    let m = member(min(e % BQ, b.members - 1u), b.h0, b.t0);
    let i = m.y * ap.q_stride + m.x * HD + dc + 4u * (e / BQ);
    return vec4<f32>(q[i], q[i + 1u], q[i + 2u], q[i + 3u]) * ap.scale;
}

fn store_q(e: u32, v: vec4<f32>) {
    let g = e % BQ;
    let r = 4u * (e / BQ) * 16u + g / 4u;
    qs[r][g % 4u] = v.x;
    qs[r + 16u][g % 4u] = v.y;
    qs[r + 32u][g % 4u] = v.z;
    qs[r + 48u][g % 4u] = v.w;
}

// Word e of a score stage's keys (key e / (DC / 2) of the tile at c, of n keys: past n the
// last again, its scores masked), dimensions dc + 2 (e % (DC / 2)) and the next.
fn k_word(b: Block, e: u32, c: u32, n: u32, dc: u32) -> vec2<f32> {
    let row = c + min(e / (DC / 2u), n - 1u);
    return unpack2x16float(k_cache[row * b.kv_words + b.head_words + dc / 2u + e % (DC / 2u)]);
}

fn store_k(e: u32, v: vec2<f32>) {
    let j = e / (DC / 2u);
    let r = 2u * (e % (DC / 2u)) * 17u + j / 2u;
    ks[r][j % 2u] = v.x;
    ks[r + 17u][j % 2u] = v.y;
}

// Word e of a value stage (key c + e / (HD / 2), clamped to the tile's n keys: its
// probability is zero).
fn v_word(b: Block, e: u32, c: u32, n: u32) -> vec2<f32> {
    let row = c + min(min(e, V_WORDS - 1u) / (HD / 2u), n - 1u);
    return unpack2x16float(v_cache[row * b.kv_words + b.head_words + e % (HD / 2u)]);
}

fn store_v(e: u32, v: vec2<f32>) {
    if (e < V_WORDS) {
        let f = (e / (HD / 2u)) * HD + 2u * (e % (HD / 2u));
        vs[f / 4u][f % 4u] = v.x;
        vs[f / 4u][f % 4u + 1u] = v.y;
    }
}

// One stage's loads in this thread's registers: a score stage's query groups and key words,
// or a value stage's value words (in w). Fetched before the previous stage's arithmetic,
// so memory latency hides behind it.
struct Regs { q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>, w0: vec2<f32>, w1: vec2<f32>, w2: vec2<f32>, w3: vec2<f32> }

// Score stage: head dimensions dc .. dc + DC of the tile at c (n keys), and with `with_q`
// the queries' too.
fn fetch_scores(b: Block, lid: u32, dc: u32, c: u32, n: u32, with_q: bool) -> Regs {
    var r: Regs;
    r.w0 = k_word(b, lid, c, n, dc);
    if (QR > 1u) { r.w1 = k_word(b, lid + 256u, c, n, dc); }
    if (QR > 2u) {
        r.w2 = k_word(b, lid + 512u, c, n, dc);
        r.w3 = k_word(b, lid + 768u, c, n, dc);
    }
    if (with_q) {
        r.q0 = q_group(b, lid, dc);
        if (QR > 1u) { r.q1 = q_group(b, lid + 256u, dc); }
        if (QR > 2u) {
            r.q2 = q_group(b, lid + 512u, dc);
            r.q3 = q_group(b, lid + 768u, dc);
        }
    }
    return r;
}

fn store_scores(lid: u32, r: Regs, with_q: bool) {
    store_k(lid, r.w0);
    if (QR > 1u) { store_k(lid + 256u, r.w1); }
    if (QR > 2u) {
        store_k(lid + 512u, r.w2);
        store_k(lid + 768u, r.w3);
    }
    if (with_q) {
        store_q(lid, r.q0);
        if (QR > 1u) { store_q(lid + 256u, r.q1); }
        if (QR > 2u) {
            store_q(lid + 512u, r.q2);
            store_q(lid + 768u, r.q3);
        }
    }
}

// Value stage: keys c .. c + VK (n left in the tile).
fn fetch_values(b: Block, lid: u32, c: u32, n: u32) -> Regs {
    var r: Regs;
    r.w0 = v_word(b, lid, c, n);
    if (VR > 1u) { r.w1 = v_word(b, lid + 256u, c, n); }
    if (VR > 2u) {
        r.w2 = v_word(b, lid + 512u, c, n);
        r.w3 = v_word(b, lid + 768u, c, n);
    }
    return r;
}

fn store_values(lid: u32, r: Regs) {
    store_v(lid, r.w0);
    if (VR > 1u) { store_v(lid + 256u, r.w1); }
    if (VR > 2u) {
        store_v(lid + 512u, r.w2);
        store_v(lid + 768u, r.w3);
    }
}

// Thread (ty, tx) scores queries 4 ty ..+3 against keys 2 tx, 2 tx + 1 of a tile, and sums
// output dimensions 4 (tx + 16 m) ..+3 of the same queries.
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tx = lid % 16u;
    let ty = lid / 16u;
    let b = block(wid);
    // This thread's queries' positions and first keys.
    var last = vec4<u32>(0u);
    var first = vec4<u32>(0u);
    for (var i = 0u; i < 4u; i++) {
        let p = step.pos0 + member(min(4u * ty + i, b.members - 1u), b.h0, b.t0).y;
        last[i] = p;
        first[i] = first_key(p);
    }

    var m_run = vec4<f32>(NEG);
    var l = vec4<f32>(0.0); // this thread's keys' share of its queries' sums
    var o0 = Acc(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var o1 = o0;
    var o2 = o0;
    var o3 = o0;
    // Output columns past the head (heads narrower than 64) read the last one and are not written.
    let vc0 = min(tx, HD4 - 1u);
    let vc1 = min(tx + 16u, HD4 - 1u);
    let vc2 = min(tx + 32u, HD4 - 1u);
    let vc3 = min(tx + 48u, HD4 - 1u);
    var regs: Regs;
    if (b.lo < b.hi) { regs = fetch_scores(b, lid, 0u, b.lo, min(BK, b.hi - b.lo), true); }
    for (var c = b.lo; c < b.hi; c += BK) {
        let n = min(BK, b.hi - c);
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        for (var dc = 0u; dc < HD; dc += DC) {
            store_scores(lid, regs, !KEEP_Q || c == b.lo);
            workgroupBarrier();
            // The next stage: the next head dimensions, else the tile's first values.
            if (dc + DC < HD) { regs = fetch_scores(b, lid, dc + DC, c, n, true); } else { regs = fetch_values(b, lid, c, n); }
            // Four dimensions per iteration, all their loads before any product: a loop that
            // loads and then uses waits on workgroup memory once per iteration.
            for (var d = 0u; d < DC; d += 4u) {
                let q0 = qs[d * 16u + ty];
                let q1 = qs[(d + 1u) * 16u + ty];
                let q2 = qs[(d + 2u) * 16u + ty];
                let q3 = qs[(d + 3u) * 16u + ty];
                let k0 = ks[d * 17u + tx];
                let k1 = ks[(d + 1u) * 17u + tx];
                let k2 = ks[(d + 2u) * 17u + tx];
                let k3 = ks[(d + 3u) * 17u + tx];
                s0 = fma(q3, vec4<f32>(k3.x), fma(q2, vec4<f32>(k2.x), fma(q1, vec4<f32>(k1.x), fma(q0, vec4<f32>(k0.x), s0))));
                s1 = fma(q3, vec4<f32>(k3.y), fma(q2, vec4<f32>(k2.y), fma(q1, vec4<f32>(k1.y), fma(q0, vec4<f32>(k0.y), s1))));
            }
            workgroupBarrier();
        }
        // Causal (and sliding-window) mask, then the online softmax: the tile's row maxima
        // go through ps, every thread of a row takes the same new max.
        let k0 = vec4<u32>(c + 2u * tx);
        let k1 = k0 + 1u;
        s0 = select(vec4<f32>(NEG), s0, (k0 >= first) & (k0 <= last) & vec4<bool>(2u * tx < n));
        s1 = select(vec4<f32>(NEG), s1, (k1 >= first) & (k1 <= last) & vec4<bool>(2u * tx + 1u < n));
        ps[tx * 17u + ty] = max(s0, s1);
        workgroupBarrier();
        var mt = m_run;
        for (var t = ty; t < 16u * 17u; t += 4u * 17u) {
            mt = max(mt, max(max(ps[t], ps[t + 17u]), max(ps[t + 34u], ps[t + 51u])));
        }
        workgroupBarrier();
        let corr = exp(m_run - mt);
        m_run = mt;
        let p0 = select(vec4<f32>(0.0), exp(s0 - mt), s0 > vec4<f32>(NEG));
        let p1 = select(vec4<f32>(0.0), exp(s1 - mt), s1 > vec4<f32>(NEG));
        l = l * corr + p0 + p1;
        o0 = acc_scale(o0, corr);
        if (OM > 1u) { o1 = acc_scale(o1, corr); }
        if (OM > 2u) {
            o2 = acc_scale(o2, corr);
            o3 = acc_scale(o3, corr);
        }
        ps[2u * tx * 17u + ty] = p0;
        ps[(2u * tx + 1u) * 17u + ty] = p1;
        for (var vk = 0u; vk < n; vk += VK) {
            store_values(lid, regs);
            workgroupBarrier();
            // The next stage: the tile's next values, else the next tile's first scores.
            if (vk + VK < n) {
                regs = fetch_values(b, lid, c + vk + VK, n - vk - VK);
            } else if (c + BK < b.hi) {
                regs = fetch_scores(b, lid, 0u, c + BK, min(BK, b.hi - c - BK), !KEEP_Q);
            }
            // Four keys per iteration, loads first (as above).
            for (var j = 0u; j < VK; j += 4u) {
                let r = (vk + j) * 17u + ty;
                let p = mat4x4<f32>(ps[r], ps[r + 17u], ps[r + 34u], ps[r + 51u]);
                o0 = acc_add4(o0, p, j * HD4 + vc0);
                if (OM > 1u) { o1 = acc_add4(o1, p, j * HD4 + vc1); }
                if (OM > 2u) {
                    o2 = acc_add4(o2, p, j * HD4 + vc2);
                    o3 = acc_add4(o3, p, j * HD4 + vc3);
                }
            }
            workgroupBarrier();
        }
    }

    // Row sums over the row's 16 threads, then each live query's output: normalised with one
    // split (no combine runs), else the unnormalised sums with the max and sum.
    ps[tx * 17u + ty] = l;
    workgroupBarrier();
    var sum = vec4<f32>(0.0);
    for (var t = ty; t < 16u * 17u; t += 4u * 17u) { sum += ps[t] + ps[t + 17u] + ps[t + 34u] + ps[t + 51u]; }
    let whole = step.splits == 1u;
    for (var i = 0u; i < 4u; i++) {
        let g = 4u * ty + i;
        if (g < b.members) {
            let m = member(g, b.h0, b.t0);
            let ob = (m.y * ap.n_head + m.x) * HD;
            let pb = ((m.y * ap.n_head + m.x) * step.splits + wid.y) * part_stride(HD);
            let f = select(1.0, 1.0 / sum[i], whole);
            let base = select(pb, ob, whole);
            for (var om = 0u; om < OM; om++) {
                let col = tx + 16u * om;
                if (col < HD4) {
                    var o = o0;
                    if (om == 1u) { o = o1; }
                    if (om == 2u) { o = o2; }
                    if (om == 3u) { o = o3; }
                    let v = acc_row(o, i) * f;
                    for (var k = 0u; k < 4u; k++) {
                        if (whole) { out[base + 4u * col + k] = v[k]; } else { part[base + 4u * col + k] = v[k]; }
                    }
                }
            }
            if (tx == 0u && !whole) {
                part[pb + HD] = m_run[i];
                part[pb + HD + 1u] = sum[i];
            }
        }
    }
}
