// Token selection on the GPU, so only the chosen id is read back.
// `argmax_partial` + `argmax_final`: greedy decoding over the whole vocabulary in two passes.
// Sampling in three: `sample_prepare` applies repetition/presence/frequency penalties and
// finds each 4096-logit chunk's max (as argmax_partial); `sample_candidates` keeps, per
// 1024-logit chunk, the logits that can survive top-k (fewer than k of the chunk's keys
// below theirs: a superset of the vocabulary's survivors), in index order; `sample` (one
// workgroup) gathers them and applies (as in llama.cpp's default chain) top-k, top-p and
// min-p on the untempered distribution, then draws from softmax(logits / temperature) over
// the survivors with the host's uniform `u`. Thresholds are found by bisection on the
// order-preserving bit pattern of (max - logit), so top-k keeps exactly the k largest
// values (plus exact ties). Without top-k, `sample` works on the whole vocabulary (one
// workgroup: slow for big vocabularies; Gemma 3's 262144 took 12 ms a token on an H100,
// where the candidates take it to well under one).

struct SParams {
    vocab: u32,
    top_k: u32,
    n_penalties: u32,
    _p0: u32,
    temperature: f32,
    top_p: f32,
    min_p: f32,
    u: f32,
    repeat_penalty: f32,
    presence_penalty: f32,
    frequency_penalty: f32,
    _p1: f32,
}
struct Penalty { id: u32, count: u32 }

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> partials: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> result: array<u32>;
@group(0) @binding(3) var<storage, read> penalties: array<Penalty>;
@group(0) @binding(4) var<uniform> sp: SParams;
// Per candidate chunk, its survivors (value bits, index) from slot chunk * CAND_CHUNK; after
// them (from slot cand_slots()), the gathered list `sample` works on.
@group(0) @binding(5) var<storage, read_write> cand: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read_write> counts: array<u32>;

const WG: u32 = 256u;
const ARGMAX_CHUNK: u32 = WG * 16u;
const CAND_CHUNK: u32 = WG * 4u;
var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;
var<workgroup> acc_u: array<u32, WG>;
var<workgroup> acc_f: array<f32, WG>;

// Keeps the larger value; on ties the lower index, like a sequential argmax.
fn better(va: f32, ia: u32, vb: f32, ib: u32) -> bool {
    return vb > va || (vb == va && ib < ia);
}

fn wg_argmax(lid: u32) {
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s && better(best_v[lid], best_i[lid], best_v[lid + s], best_i[lid + s])) {
            best_v[lid] = best_v[lid + s];
            best_i[lid] = best_i[lid + s];
        }
        workgroupBarrier();
    }
}

// Chunk `c` of ARGMAX_CHUNK logits: its largest (and first) into partials[c].
fn chunk_argmax(c: u32, lid: u32) {
    var bv = -3.4e38;
    var bi = 0xFFFFFFFFu;
    for (var i = c * ARGMAX_CHUNK + lid; i < min(sp.vocab, (c + 1u) * ARGMAX_CHUNK); i += WG) {
        let v = logits[i];
        if (better(bv, bi, v, i)) { bv = v; bi = i; }
    }
    best_v[lid] = bv;
    best_i[lid] = bi;
    workgroupBarrier();
    wg_argmax(lid);
    if (lid == 0u) { partials[c] = vec2<u32>(bitcast<u32>(best_v[0]), best_i[0]); }
}

@compute @workgroup_size(256)
fn argmax_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    chunk_argmax(wid.x, lid);
}

@compute @workgroup_size(256)
fn argmax_final(@builtin(local_invocation_index) lid: u32) {
    let n = (sp.vocab + WG * 16u - 1u) / (WG * 16u);
    var bv = -3.4e38;
    var bi = 0xFFFFFFFFu;
    for (var i = lid; i < n; i += WG) {
        let v = bitcast<f32>(partials[i].x);
        if (better(bv, bi, v, partials[i].y)) { bv = v; bi = partials[i].y; }
    }
    best_v[lid] = bv;
    best_i[lid] = bi;
    workgroupBarrier();
    wg_argmax(lid);
    if (lid == 0u) { result[0] = best_i[0]; }
}

// Order-preserving key: smaller key = larger logit. (max - logit) >= 0, so its f32 bits
// compare like the value.
fn key_of(v: f32, mx: f32) -> u32 {
    return bitcast<u32>(max(mx - v, 0.0));
}

#include workgroup_sum

// The workgroup's sum of v, the same (uniform) value in every invocation; the bisections
// call it twice per step. Counts go as floats: exact below 2^24.
var<workgroup> uniform_sum: f32;

fn sum_f(v: f32, lid: u32) -> f32 {
    workgroupBarrier(); // the last call's invocations are done with workgroup_sum's memory
    let total = workgroup_sum(vec2<f32>(v, 0.0), lid).x;
    if (lid == 0u) { uniform_sum = total; }
    return workgroupUniformLoad(&uniform_sum);
}

fn sum_u(v: u32, lid: u32) -> u32 {
    return u32(sum_f(f32(v), lid));
}

// Does top-k narrow the vocabulary, so that `sample` works on the candidates?
fn by_candidates() -> bool {
    return sp.top_k > 0u && sp.top_k < sp.vocab;
}

fn cand_slots() -> u32 {
    return (sp.vocab + CAND_CHUNK - 1u) / CAND_CHUNK * CAND_CHUNK;
}

// `sample`'s list: top-k's survivors in workgroup memory once top-k has run (where they
// fit: SURVIVORS), else the gathered candidates (n_items of them), or the whole vocabulary;
// always in index order. Item i's logit bits and vocabulary index.
const SURVIVORS: u32 = 1024u;
var<workgroup> n_items: u32;
var<workgroup> survivors: array<vec2<u32>, SURVIVORS>;
var<private> in_survivors: bool;

fn item(i: u32) -> vec2<u32> {
    if (in_survivors) { return survivors[min(i, SURVIVORS - 1u)]; }
    if (by_candidates()) { return cand[cand_slots() + i]; }
    return vec2<u32>(bitcast<u32>(logits[i]), i);
}

// Items lid * per .. of the n (per = n / WG, rounded up): a contiguous range per invocation,
// so that ranges in invocation order are in index order.
fn range_of(lid: u32, n: u32) -> vec2<u32> {
    let per = (n + WG - 1u) / WG;
    let lo = min(n, lid * per);
    return vec2<u32>(lo, min(n, lo + per));
}

fn item_value(i: u32) -> f32 {
    return bitcast<f32>(item(i).x);
}

fn count_le(limit: u32, mx: f32, lid: u32, n: u32) -> u32 {
    var c = 0u;
    for (var i = lid; i < n; i += WG) { c += u32(key_of(item_value(i), mx) <= limit); }
    return sum_u(c, lid);
}

fn mass_le(limit: u32, mx: f32, lid: u32, n: u32) -> f32 {
    var s = 0.0;
    for (var i = lid; i < n; i += WG) {
        let v = item_value(i);
        if (key_of(v, mx) <= limit) { s += exp(v - mx); }
    }
    return sum_f(s, lid);
}

// The penalized vocabulary's largest logit, from sample_prepare's chunk maxima.
fn penalized_max() -> f32 {
    var mx = -3.4e38;
    for (var c = 0u; c < (sp.vocab + ARGMAX_CHUNK - 1u) / ARGMAX_CHUNK; c++) { mx = max(mx, bitcast<f32>(partials[c].x)); }
    return mx;
}

@compute @workgroup_size(256)
fn sample_prepare(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // Penalties (llama.cpp semantics) on this chunk: each listed id is distinct, so no write
    // conflicts.
    let lo = wid.x * ARGMAX_CHUNK;
    for (var i = lid; i < sp.n_penalties; i += WG) {
        let pen = penalties[i];
        if (pen.id >= lo && pen.id < lo + ARGMAX_CHUNK) {
            var v = logits[pen.id];
            if (v > 0.0) { v /= sp.repeat_penalty; } else { v *= sp.repeat_penalty; }
            v -= f32(pen.count) * sp.frequency_penalty + sp.presence_penalty;
            logits[pen.id] = v;
        }
    }
    storageBarrier();
    chunk_argmax(wid.x, lid);
}

var<workgroup> ckeys: array<u32, CAND_CHUNK>;

// With each invocation's count in acc_u, behind a barrier: the counts of the invocations
// before `lid`, where an in-order compaction writes its first item.
fn counted_before(lid: u32) -> u32 {
    var at = 0u;
    for (var t = 0u; t < lid; t++) { at += acc_u[t]; }
    return at;
}

@compute @workgroup_size(256)
fn sample_candidates(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (!by_candidates()) { return; } // uniform
    let mx = penalized_max();
    // Four consecutive logits per thread, as keys (past the vocabulary: the largest key, and
    // never kept).
    let base = wid.x * CAND_CHUNK;
    let first = base + 4u * lid;
    var key = vec4<u32>(0xFFFFFFFFu);
    for (var j = 0u; j < 4u; j++) {
        if (first + j < sp.vocab) { key[j] = key_of(logits[first + j], mx); }
        ckeys[4u * lid + j] = key[j];
    }
    workgroupBarrier();
    // A logit can survive the vocabulary's top-k only if fewer than k of its chunk's keys
    // are below its own (the vocabulary has at least those).
    var below = vec4<u32>(0u);
    for (var i = 0u; i < CAND_CHUNK; i++) { below += vec4<u32>(vec4<u32>(ckeys[i]) < key); }
    let kept = (below < vec4<u32>(sp.top_k)) & (key != vec4<u32>(0xFFFFFFFFu));
    let mine = u32(kept.x) + u32(kept.y) + u32(kept.z) + u32(kept.w);
    acc_u[lid] = mine;
    workgroupBarrier();
    // In index order: after the survivors of the threads before this one.
    var at = base + counted_before(lid);
    for (var j = 0u; j < 4u; j++) {
        if (kept[j]) {
            cand[at] = vec2<u32>(bitcast<u32>(logits[first + j]), first + j);
            at += 1u;
        }
    }
    if (lid == WG - 1u) { counts[wid.x] = at - base; }
}

@compute @workgroup_size(256)
fn sample(@builtin(local_invocation_index) lid: u32) {
    let mx = penalized_max();
    // With top-k: the candidates, gathered after the chunks' slots in index order.
    var n = sp.vocab;
    if (by_candidates()) {
        let chunks = cand_slots() / CAND_CHUNK;
        for (var c = lid; c < chunks; c += WG) {
            var at = cand_slots();
            for (var b = 0u; b < c; b++) { at += counts[b]; }
            for (var j = 0u; j < counts[c]; j++) { cand[at + j] = cand[c * CAND_CHUNK + j]; }
            if (c == chunks - 1u) { n_items = at + counts[c] - cand_slots(); }
        }
        storageBarrier();
        n = workgroupUniformLoad(&n_items);
    }

    var limit = 0x7F800000u; // +inf bits: everything
    if (sp.top_k > 0u && sp.top_k < sp.vocab) {
        // Smallest key limit with count(key <= limit) >= top_k.
        var lo = 0u;
        var hi = 0x7F800000u;
        while (lo < hi) {
            let mid = lo + (hi - lo) / 2u;
            if (count_le(mid, mx, lid, n) >= sp.top_k) { hi = mid; } else { lo = mid + 1u; }
        }
        limit = lo;
        // Its survivors into workgroup memory, in index order, where they fit (k and its
        // ties): top-p's bisection and the draw then read a few values, not the candidates.
        let kept = count_le(limit, mx, lid, n);
        if (kept <= SURVIVORS) {
            let r = range_of(lid, n);
            var mine = 0u;
            for (var i = r.x; i < r.y; i++) { mine += u32(key_of(item_value(i), mx) <= limit); }
            acc_u[lid] = mine;
            workgroupBarrier();
            var at = counted_before(lid);
            for (var i = r.x; i < r.y; i++) {
                let it = item(i);
                if (key_of(bitcast<f32>(it.x), mx) <= limit) {
                    survivors[at] = it;
                    at += 1u;
                }
            }
            workgroupBarrier();
            in_survivors = true;
            n = kept;
        }
    }
    if (sp.top_p < 1.0) {
        let total = mass_le(limit, mx, lid, n);
        var lo = 0u;
        var hi = limit;
        while (lo < hi) {
            let mid = lo + (hi - lo) / 2u;
            if (mass_le(mid, mx, lid, n) >= sp.top_p * total) { hi = mid; } else { lo = mid + 1u; }
        }
        limit = lo;
    }
    if (sp.min_p > 0.0) {
        // p_i / p_max >= min_p  <=>  max - logit <= -ln(min_p)
        limit = min(limit, bitcast<u32>(-log(sp.min_p)));
    }

    // Draw from softmax(logits / T) over keys <= limit, scanning in index order.
    let inv_t = 1.0 / max(sp.temperature, 1e-6);
    let r = range_of(lid, n);
    let lo_i = r.x;
    let hi_i = r.y;
    var s = 0.0;
    for (var i = lo_i; i < hi_i; i++) {
        let v = item_value(i);
        if (key_of(v, mx) <= limit) { s += exp((v - mx) * inv_t); }
    }
    workgroupBarrier();
    acc_f[lid] = s;
    workgroupBarrier();
    if (lid == 0u) {
        var total = 0.0;
        for (var j = 0u; j < WG; j++) { total += acc_f[j]; }
        var goal = sp.u * total;
        var owner = WG - 1u;
        for (var j = 0u; j < WG; j++) {
            if (goal < acc_f[j]) { owner = j; break; }
            goal -= acc_f[j];
        }
        // Fall back to the last thread that has mass (u * total rounding at the top end).
        if (acc_f[owner] == 0.0) {
            for (var j = WG; j > 0u; j--) { if (acc_f[j - 1u] > 0.0) { owner = j - 1u; goal = acc_f[j - 1u]; break; } }
        }
        acc_u[0] = owner;
        acc_f[0] = goal;
    }
    workgroupBarrier();
    if (lid == acc_u[0]) {
        var goal = acc_f[0];
        var chosen = 0xFFFFFFFFu;
        var last = 0xFFFFFFFFu;
        for (var i = lo_i; i < hi_i; i++) {
            let it = item(i);
            let v = bitcast<f32>(it.x);
            if (key_of(v, mx) <= limit) {
                last = it.y;
                let e = exp((v - mx) * inv_t);
                if (goal < e) { chosen = it.y; break; }
                goal -= e;
            }
        }
        if (chosen == 0xFFFFFFFFu) { chosen = last; }
        result[0] = chosen;
    }
}
