// Token selection on the GPU, so only the chosen id is read back.
// `argmax_partial` + `argmax_final`: greedy decoding over the whole vocabulary in two passes.
// Sampling in three: `sample_prepare` applies repetition/presence/frequency penalties, finds
// each 4096-logit chunk's max (as argmax_partial) and a bound below which no logit survives
// top-k (the k-th largest of its invocations' maxima); `sample_candidates` keeps, per
// 1024-logit chunk, the logits within the largest bound, in index order (for a real model,
// usually 50-200 of the vocabulary); `sample` (one workgroup) gathers them into workgroup
// memory and applies (as in llama.cpp's default chain) top-k, top-p and min-p on the
// untempered distribution, then draws from softmax(logits / temperature) over the survivors
// with the host's uniform `u`. Limits are keys: the order-preserving bit pattern of
// (max - logit), so top-k keeps exactly the k largest values (plus exact ties); over the
// gathered candidates they come from each one's rank, elsewhere by bisection. Without top-k,
// with top-k past 256 or with more than 256 candidate chunks, `sample` bisects over the
// whole vocabulary (one workgroup: Gemma 3's 262144 took 12 ms a token on an H100).

struct SParams {
    vocab: u32,
    top_k: u32,
    n_penalties: u32,
    keep: u32,          // the chosen id goes to result[0] (the next step's input) and result[keep]
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

// The step's choice: the next step's input, and a slot of the submission's readback.
fn choose(id: u32) {
    result[0] = id;
    result[sp.keep] = id;
}

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> partials: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> result: array<u32>;
@group(0) @binding(3) var<storage, read> penalties: array<Penalty>;
@group(0) @binding(4) var<uniform> sp: SParams;
// Per candidate chunk, its candidates (value bits, index) from slot chunk * CAND_CHUNK; after
// them (from slot cand_slots()), the gathered list `sample` works on where it outgrows
// workgroup memory.
@group(0) @binding(5) var<storage, read_write> cand: array<vec2<u32>>;
// Per candidate chunk, its candidates' count; after them (from candidate_chunks()), per
// 4096-logit chunk, sample_prepare's bound (ordered bits, 0: none).
@group(0) @binding(6) var<storage, read_write> counts: array<u32>;

const WG: u32 = 256u;
const ARGMAX_CHUNK: u32 = WG * 16u;
const CAND_CHUNK: u32 = WG * 4u;
var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;

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

fn argmax_chunks() -> u32 {
    return (sp.vocab + ARGMAX_CHUNK - 1u) / ARGMAX_CHUNK;
}

// A thread's logits i, i + WG, i + 2·WG, i + 3·WG of a chunk ending at `end` (past it, the
// chunk's last logit again, which better4 skips: the loads need no branch).
fn chunk_logits4(i: u32, end: u32) -> vec4<f32> {
    let last = end - 1u;
    return vec4<f32>(logits[min(i, last)], logits[min(i + WG, last)], logits[min(i + 2u * WG, last)], logits[min(i + 3u * WG, last)]);
}

// Best of (bv, bi) and the four logits at i, i + WG, ... (in index order, so ties keep the
// lower index; none past `end`).
fn better4(b: vec2<u32>, v: vec4<f32>, i: u32, end: u32) -> vec2<u32> {
    var best = b;
    for (var j = 0u; j < 4u; j++) {
        let ij = i + j * WG;
        if (ij < end && better(bitcast<f32>(best.x), best.y, v[j], ij)) { best = vec2<u32>(bitcast<u32>(v[j]), ij); }
    }
    return best;
}

// Chunk `c` of ARGMAX_CHUNK logits: its largest (and first) into partials[c]. Each thread's
// sixteen loads go out before its first comparison (a loop over them waited one memory
// round trip each). Returns the invocation's own largest logit (and index) of the chunk's.
fn chunk_argmax(c: u32, lid: u32) -> vec2<u32> {
    let i = c * ARGMAX_CHUNK + lid;
    let end = min(sp.vocab, (c + 1u) * ARGMAX_CHUNK);
    let a = chunk_logits4(i, end);
    let b = chunk_logits4(i + 4u * WG, end);
    let d = chunk_logits4(i + 8u * WG, end);
    let e = chunk_logits4(i + 12u * WG, end);
    var best = vec2<u32>(bitcast<u32>(-3.4e38), 0xFFFFFFFFu);
    best = better4(best, a, i, end);
    best = better4(best, b, i + 4u * WG, end);
    best = better4(best, d, i + 8u * WG, end);
    best = better4(best, e, i + 12u * WG, end);
    best_v[lid] = bitcast<f32>(best.x);
    best_i[lid] = best.y;
    workgroupBarrier();
    wg_argmax(lid);
    if (lid == 0u) { partials[c] = vec2<u32>(bitcast<u32>(best_v[0]), best_i[0]); }
    return best;
}

@compute @workgroup_size(256)
fn argmax_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    _ = chunk_argmax(wid.x, lid);
}

@compute @workgroup_size(256)
fn argmax_final(@builtin(local_invocation_index) lid: u32) {
    let n = argmax_chunks();
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
    if (lid == 0u) { choose(best_i[0]); }
}

// Order-preserving key: smaller key = larger logit. (max - logit) >= 0, so its f32 bits
// compare like the value.
fn key_of(v: f32, mx: f32) -> u32 {
    return bitcast<u32>(max(mx - v, 0.0));
}

#include workgroup_sum

// The workgroup's sum of v, the same (uniform) value in every invocation (a bisection step
// takes one). Counts go as floats: exact below 2^24.
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

fn candidate_chunks() -> u32 {
    return (sp.vocab + CAND_CHUNK - 1u) / CAND_CHUNK;
}

// Does top-k narrow the vocabulary, so that `sample` works on the candidates? (`sample`
// takes one chunk per invocation.)
fn by_candidates() -> bool {
    return sp.top_k > 0u && sp.top_k < sp.vocab && candidate_chunks() <= WG;
}

fn cand_slots() -> u32 {
    return candidate_chunks() * CAND_CHUNK;
}

// `sample`'s list: the candidates within the bound, or top-k's survivors, in workgroup
// memory where they fit (SURVIVORS), else the candidates gathered after the chunks' slots,
// or the whole vocabulary; always in index order. Item i's logit bits and vocabulary index.
const SURVIVORS: u32 = WG * 4u; // limit_by_ranks ranks four items per invocation
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

// f32 bits as a u32 that orders like the value (for atomicMax).
fn ordered(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn unordered(o: u32) -> f32 {
    return bitcast<f32>(select(~o, o & 0x7FFFFFFFu, (o & 0x80000000u) != 0u));
}

// Zero-initialized per dispatch: below every ordered value.
var<workgroup> wg_max: atomic<u32>;

// The penalized vocabulary's largest logit, from sample_prepare's chunk maxima (one load per
// invocation, not a serial pass).
fn penalized_max(lid: u32) -> f32 {
    for (var c = lid; c < argmax_chunks(); c += WG) {
        atomicMax(&wg_max, ordered(bitcast<f32>(partials[c].x)));
    }
    workgroupBarrier();
    return unordered(atomicLoad(&wg_max));
}

// Each invocation's largest logit, in sample_prepare (four to an element: a quarter of the
// loads when each invocation compares its own with all of them).
var<workgroup> own_max: array<vec4<f32>, WG / 4u>;
// The chunk's bound as ordered bits (zero-initialized: none).
var<workgroup> chunk_bound: atomic<u32>;

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
    let own = chunk_argmax(wid.x, lid);
    // The chunk's bound: the k-th largest of its invocations' largest logits. Those are k
    // distinct logits, so the vocabulary's k-th largest is no smaller, and every logit that
    // can survive top-k is at least the largest bound of all chunks. (Invocations past the
    // vocabulary hold -3.4e38, the loosest bound.) Top-k past WG: no bound.
    if (by_candidates() && sp.top_k <= WG) { // uniform
        let mine = bitcast<f32>(own.x);
        own_max[lid / 4u][lid % 4u] = mine;
        workgroupBarrier();
        var ge = vec4<u32>(0u);
        for (var t = 0u; t < WG / 4u; t++) { ge += vec4<u32>(own_max[t] >= vec4<f32>(mine)); }
        // At least k maxima up from it: the largest such is the k-th largest.
        if (dot(ge, vec4<u32>(1u)) >= sp.top_k) { atomicMax(&chunk_bound, ordered(mine)); }
    }
    workgroupBarrier();
    if (lid == 0u) { counts[candidate_chunks() + wid.x] = atomicLoad(&chunk_bound); }
}

// Inclusive prefix sums over the invocations, in log2(WG) rounds.
var<workgroup> scan_sums: array<f32, WG>;

// The sum of v over the invocations before `lid` (x), up to and with it (y), and over all
// (z); the same sums in every invocation that reads them, so the ranges [x, y) tile
// [0, z) exactly. Counts go as floats: exact below 2^24.
fn scan(v: f32, lid: u32) -> vec3<f32> {
    workgroupBarrier(); // the last call's invocations are done with scan_sums
    scan_sums[lid] = v;
    for (var d = 1u; d < WG; d <<= 1u) {
        workgroupBarrier();
        let add = select(0.0, scan_sums[max(lid, d) - d], lid >= d);
        workgroupBarrier();
        scan_sums[lid] += add;
    }
    workgroupBarrier();
    let before = select(0.0, scan_sums[max(lid, 1u) - 1u], lid > 0u);
    return vec3<f32>(before, scan_sums[lid], scan_sums[WG - 1u]);
}

// Where an in-order compaction writes an invocation's first item, after the `mine` items of
// the invocations before it; and how many all of them keep.
fn compact_at(mine: u32, lid: u32) -> vec2<u32> {
    let sums = scan(f32(mine), lid);
    return vec2<u32>(u32(sums.x), u32(sums.z));
}

// Logit i's key; past the vocabulary the largest, never kept.
fn key_at(i: u32, mx: f32) -> u32 {
    if (i < sp.vocab) { return key_of(logits[i], mx); }
    return 0xFFFFFFFFu;
}

// The largest of sample_prepare's chunk bounds (ordered bits, 0: none).
var<workgroup> wg_bound: atomic<u32>;

@compute @workgroup_size(256)
fn sample_candidates(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (!by_candidates()) { return; } // uniform
    for (var c = lid; c < argmax_chunks(); c += WG) {
        atomicMax(&wg_bound, counts[candidate_chunks() + c]);
    }
    let mx = penalized_max(lid); // behind its barrier, wg_bound is complete too
    let b = atomicLoad(&wg_bound);
    let bound = select(0xFFFFFFFFu, key_of(unordered(b), mx), b != 0u);
    // The chunk's candidates: its logits within the bound (four consecutive per invocation),
    // in index order.
    let base = wid.x * CAND_CHUNK;
    let first = base + 4u * lid;
    let key = vec4<u32>(key_at(first, mx), key_at(first + 1u, mx), key_at(first + 2u, mx), key_at(first + 3u, mx));
    let kept = (key <= vec4<u32>(bound)) & (key != vec4<u32>(0xFFFFFFFFu));
    var at = base + compact_at(dot(vec4<u32>(kept), vec4<u32>(1u)), lid).x;
    if (kept.x) { cand[at] = vec2<u32>(bitcast<u32>(logits[first]), first); at += 1u; }
    if (kept.y) { cand[at] = vec2<u32>(bitcast<u32>(logits[first + 1u]), first + 1u); at += 1u; }
    if (kept.z) { cand[at] = vec2<u32>(bitcast<u32>(logits[first + 2u]), first + 2u); at += 1u; }
    if (kept.w) { cand[at] = vec2<u32>(bitcast<u32>(logits[first + 3u]), first + 3u); at += 1u; }
    if (lid == WG - 1u) { counts[wid.x] = at - base; }
}

// Where candidate chunk c's candidates start in the gathered order (a prefix of the counts);
// from the last chunk on, their total.
var<workgroup> chunk_at: array<u32, 257>; // WG + 1
var<workgroup> n_items: u32;

// Gathers the chunks' candidates, in index order, into `survivors` where they fit, else after
// the chunks' slots; their number.
fn gather_candidates(lid: u32) -> u32 {
    var count = 0u;
    if (lid < candidate_chunks()) { count = counts[lid]; }
    let place = compact_at(count, lid);
    chunk_at[lid] = place.x;
    if (lid == 0u) {
        chunk_at[WG] = place.y;
        n_items = place.y;
    }
    let n = workgroupUniformLoad(&n_items);
    let fits = n <= SURVIVORS;
    in_survivors = fits;
    // A contiguous range of the gathered order per invocation, from the chunk that holds its
    // first item (the last one starting at or before it).
    let r = range_of(lid, n);
    var c = 0u;
    for (var step = WG / 2u; step > 0u; step >>= 1u) {
        if (chunk_at[c + step] <= r.x) { c += step; }
    }
    for (var i = r.x; i < r.y; i++) {
        while (chunk_at[c + 1u] <= i) { c++; }
        let it = cand[c * CAND_CHUNK + i - chunk_at[c]];
        if (fits) { survivors[i] = it; } else { cand[cand_slots() + i] = it; }
    }
    if (fits) { workgroupBarrier(); } else { storageBarrier(); }
    return n;
}

// ~ top-k's and top-p's limits, as atomicMax of complements (zero-initialized: no limit).
var<workgroup> k_limit_not: atomic<u32>;
var<workgroup> p_limit_not: atomic<u32>;
var<workgroup> p_total: atomic<u32>; // f32 bits of a non-negative sum: ordered as u32

// An item's key and prefix mass (the mass of the items up to its key, summed in index order
// like the bisections' masses); past n, the largest key.
struct Ranked { key: u32, mass: f32 }

// Survivor i ranked against the n survivors; counts it towards top-k's limit if at least k
// keys are up to its own.
fn rank_item(i: u32, n: u32, mx: f32, top_k: bool, top_p: bool) -> Ranked {
    if (i >= n) { return Ranked(0xFFFFFFFFu, 0.0); }
    let key = key_of(bitcast<f32>(survivors[i].x), mx);
    var le = 0u;
    var mass = 0.0;
    for (var j = 0u; j < n; j++) {
        let v = bitcast<f32>(survivors[j].x);
        let up = key_of(v, mx) <= key;
        le += u32(up);
        if (top_p) { mass += select(0.0, exp(v - mx), up); }
    }
    if (top_k && le >= sp.top_k) { atomicMax(&k_limit_not, ~key); }
    return Ranked(key, mass);
}

fn count_mass(r: Ranked, limit: u32) {
    if (r.key <= limit) { atomicMax(&p_total, bitcast<u32>(r.mass)); }
}

fn count_p_limit(r: Ranked, limit: u32, goal: f32) {
    if (r.key <= limit && r.mass >= goal) { atomicMax(&p_limit_not, ~r.key); }
}

// Top-k's and top-p's limit over n items in workgroup memory (at most SURVIVORS, four per
// invocation) from each item's rank and prefix mass, in one pass of n * n / WG steps instead
// of two bisections of 31 steps and barriers each. Top-k's limit is the smallest key with at
// least k keys up to it; top-p's the smallest key (up to that) whose prefix mass reaches
// top_p of top-k's survivors' mass.
fn limit_by_ranks(mx: f32, lid: u32, n: u32) -> u32 {
    let top_k = sp.top_k > 0u && sp.top_k < sp.vocab;
    let top_p = sp.top_p < 1.0;
    let r0 = rank_item(lid, n, mx, top_k, top_p);
    let r1 = rank_item(lid + WG, n, mx, top_k, top_p);
    let r2 = rank_item(lid + 2u * WG, n, mx, top_k, top_p);
    let r3 = rank_item(lid + 3u * WG, n, mx, top_k, top_p);
    workgroupBarrier();
    var limit = min(0x7F800000u, ~atomicLoad(&k_limit_not));
    if (top_p) {
        // The survivors' mass: the largest prefix mass within the limit.
        count_mass(r0, limit);
        count_mass(r1, limit);
        count_mass(r2, limit);
        count_mass(r3, limit);
        workgroupBarrier();
        let goal = sp.top_p * bitcast<f32>(atomicLoad(&p_total));
        count_p_limit(r0, limit, goal);
        count_p_limit(r1, limit, goal);
        count_p_limit(r2, limit, goal);
        count_p_limit(r3, limit, goal);
        workgroupBarrier();
        limit = min(limit, ~atomicLoad(&p_limit_not));
    }
    return limit;
}

// ~ the first invocation whose running mass passes the draw's goal, and the last with mass
// (zero-initialized).
var<workgroup> first_not: atomic<u32>;
var<workgroup> last_with_mass: atomic<u32>;

@compute @workgroup_size(256)
fn sample(@builtin(local_invocation_index) lid: u32) {
    let mx = penalized_max(lid);
    var n = sp.vocab;
    var in_wg = false; // the items are in workgroup memory
    if (by_candidates()) {
        n = gather_candidates(lid);
        in_wg = n <= SURVIVORS;
    }

    var limit = 0x7F800000u; // +inf bits: everything
    if (!in_wg && sp.top_k > 0u && sp.top_k < sp.vocab) {
        // Smallest key limit with count(key <= limit) >= top_k.
        var lo = 0u;
        var hi = 0x7F800000u;
        while (lo < hi) {
            let mid = lo + (hi - lo) / 2u;
            if (count_le(mid, mx, lid, n) >= sp.top_k) { hi = mid; } else { lo = mid + 1u; }
        }
        limit = lo;
        // Its survivors into workgroup memory, in index order, where they fit (k and its
        // ties).
        let kept = count_le(limit, mx, lid, n);
        if (kept <= SURVIVORS) {
            let r = range_of(lid, n);
            var mine = 0u;
            for (var i = r.x; i < r.y; i++) { mine += u32(key_of(item_value(i), mx) <= limit); }
            var at = compact_at(mine, lid).x;
            for (var i = r.x; i < r.y; i++) {
                let it = item(i);
                if (key_of(bitcast<f32>(it.x), mx) <= limit) {
                    survivors[at] = it;
                    at += 1u;
                }
            }
            workgroupBarrier();
            in_survivors = true;
            in_wg = true;
            n = kept;
        }
    }
    if (in_wg) {
        limit = limit_by_ranks(mx, lid, n);
    } else if (sp.top_p < 1.0) {
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
    // Like a walk in index order: the first invocation with mass whose running sum passes
    // u * total draws, or (u * total rounding up to the total) the last one with mass. The
    // running sums come from a tree, so they need not grow monotonically where an invocation
    // adds nothing: only invocations with mass take part.
    let mass = scan(s, lid);
    let goal = sp.u * mass.z;
    if (s > 0.0) {
        if (goal < mass.y) { atomicMax(&first_not, ~lid); }
        atomicMax(&last_with_mass, lid);
    }
    workgroupBarrier();
    let first = ~atomicLoad(&first_not);
    if (lid == select(atomicLoad(&last_with_mass), first, first < WG)) {
        var rest = goal - mass.x;
        var chosen = 0xFFFFFFFFu;
        var last = 0xFFFFFFFFu;
        for (var i = lo_i; i < hi_i; i++) {
            let it = item(i);
            let v = bitcast<f32>(it.x);
            if (key_of(v, mx) <= limit) {
                last = it.y;
                let e = exp((v - mx) * inv_t);
                if (rest < e) { chosen = it.y; break; }
                rest -= e;
            }
        }
        if (chosen == 0xFFFFFFFFu) { chosen = last; }
        choose(chosen);
    }
}
