// Decode-path matrix x vector: y[out_offset + r] = sum_k W[r][k] * x[t][k] (+ bias, + y), for
// one token t (decode's, or the last of a prefill).
// LANES threads share a row (256 / LANES rows per workgroup), taking its groups of 4 columns
// in turn, so neighbouring lanes read neighbouring weight words and x values (coalesced).
// GPUs use 32 to 256 lanes, as many as let each lane issue all its loads at once (the engine
// picks them per matrix: decode is latency-bound, and a lane that loops over its columns
// waits one memory round trip per iteration), summed with subgroup shuffles where the adapter
// has subgroups (reduce_subgroup.wgsl) or through workgroup memory (reduce_shared.wgsl); CPU
// adapters (lavapipe, SwiftShader), where barriers are costly, use 1 lane per row and no
// reduction.
//
// Fusions that save a dispatch each in the decode step:
// - NORM: x is RMS-normalised with weights `norm_w` on the fly. norm(x)·w = inv_rms · (x∘g)·w,
//   and the lanes of a row together read all of x, so the sum of squares rides along in the
//   same reduction as the dot product.
// - GLU: the weight stacks gate rows over up rows; a row computes both and writes
//   act(gate) * up (SwiGLU / GeGLU).
// - POST (with NORM; Gemma's norms after attention and FFN): x is the sublayer's output, and
//   the input is the residual `res_in` plus x RMS-normalised with the first k of `norm_w`
//   (the matvec's own norm weights g follow them): r' = r + a·(x∘p), a = x's inverse RMS.
//   Since r'∘g·w = r∘g·w + a·(x∘p∘g)·w and |r'|² = |r|² + 2a·r·(x∘p) + a²|x∘p|², a row
//   sums those products and x's squares in its one reduction and applies a (and r''s
//   inverse RMS) at the end: no workgroup-wide sum of x holds back the products. The
//   first row's lanes of the first workgroup then write r' to `res_out`, a second buffer,
//   since other workgroups still read `res_in`.
//
// - MERGE (decode's attention output projection; its own pipeline, MERGE_VEC4S > 1): x holds
//   attention's key-split partials for the token (attention_partials.wgsl), and every
//   workgroup merges them into workgroup memory before its products, so no combine pass
//   runs between attention and this matvec. The engine merges where the heads fit in xm
//   and the splits are few (short contexts); longer ones run the combine pass and a plain
//   matvec.
//   With OWN (after attention_projected.wgsl, which leaves this step's own key out of its
//   splits), that key joins as one more split: each head's q·k from the q, key and value
//   that attention left after the partials.
//
// `many` is the entry for matrices with many rows (vocabulary heads), which are bound by
// bandwidth rather than latency: each group of LANES lanes takes 8 rows, loading (and
// normalising) each x value once for all of them and keeping 8 weight loads in flight per
// lane (Gemma 3's 262144-row head: 233 -> 114 µs on an H100).

struct WParams {
    k: u32,            // row length
    rows: u32,         // output rows of this dispatch (with GLU: gate rows)
    scale_base: u32,   // word offset of separated f16 scales
    out_offset: u32,   // first output row this part writes (parts split large tensors)
    out_stride: u32,   // y row stride
    flags: u32,        // 1: accumulate into y, 2: add bias, 4: only the step's last token,
                       // 8: NORM, 16: GLU; act in bits 8..
    eps: f32,
    head_dim: u32,     // MERGE: the heads' width (a matmul's columns per split)
}
struct Step { n_tok: u32, pos0: u32, splits: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<uniform> wp: WParams;
@group(0) @binding(5) var<uniform> step: Step;
@group(0) @binding(6) var<storage, read> norm_w: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> res_in: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> res_out: array<vec4<f32>>;

#include activation
#include attention_partials

// The size of MERGE's workgroup memory, set only in its pipeline (other matvecs hold none).
override MERGE_VEC4S: u32 = 1u;
// Set only in POST's pipelines, so other matvecs compile without its path.
override POST: bool = false;
var<workgroup> xm: array<vec4<f32>, MERGE_VEC4S>;  // the merged attention output
// Set only in the merging pipeline after attention_projected.wgsl.
override OWN: bool = false;
var<workgroup> own_dots: array<f32, MERGE_VEC4S>;  // OWN: q·k of each thread's 4 dimensions (a thread each: MERGE_VEC4S >= 256)

// The max of split s of the n at `base` (past the splits, whose last is read again so the
// loads need no branch, the lowest float).
fn split_max(base: u32, s: u32, n: u32, stride4: u32, hd: u32) -> f32 {
    return select(-3.0e38, x[(base + min(s, n - 1u)) * stride4 + hd / 4u].x, s < n);
}

// Split s's share of dimensions 4d4..4d4+3, given the head's largest max mx: its values
// weighted by exp(m - mx) (v), and its sum so weighted (l); zero past the splits.
struct Share { v: vec4<f32>, l: f32 }

fn split_share(base: u32, s: u32, n: u32, stride4: u32, hd: u32, d4: u32, mx: f32) -> Share {
    let row = (base + min(s, n - 1u)) * stride4;
    let ml = x[row + hd / 4u].xy;
    let e = select(0.0, exp(ml.x - mx), s < n);
    return Share(e * x[row + d4], e * ml.y);
}

// A head's splits merged for its dimensions 4d4..4d4+3: their largest max, and their shares
// weighted by it. Four splits' loads in flight per round; the shares' loads do not wait on
// the max.
struct Merged { m: f32, s: Share }

fn splits_merged(base: u32, n: u32, stride4: u32, hd: u32, d4: u32) -> Merged {
    var mx = -3.0e38;
    for (var s = 0u; s < n; s += 4u) {
        mx = max(max(mx, max(split_max(base, s, n, stride4, hd), split_max(base, s + 1u, n, stride4, hd))),
                 max(split_max(base, s + 2u, n, stride4, hd), split_max(base, s + 3u, n, stride4, hd)));
    }
    var acc = Share(vec4<f32>(0.0), 0.0);
    for (var s = 0u; s < n; s += 4u) {
        let a = split_share(base, s, n, stride4, hd, d4, mx);
        let b = split_share(base, s + 1u, n, stride4, hd, d4, mx);
        let c = split_share(base, s + 2u, n, stride4, hd, d4, mx);
        let d = split_share(base, s + 3u, n, stride4, hd, d4, mx);
        acc = Share(acc.v + a.v + b.v + c.v + d.v, acc.l + a.l + b.l + c.l + d.l);
    }
    return Merged(mx, acc);
}

// MERGE: the token's attention output into xm, from its `step.splits` key splits (flash
// decoding's combine). Each thread merges its own four dimensions, reading its head's
// splits' maxima and sums itself, so one barrier (xm's) is all the merge waits on. With OWN
// (heads x head_dim at most 1024: one group of four dimensions a thread), this step's key
// joins as one more split: the thread's share of its head's q·k goes through workgroup
// memory behind one more barrier, its loads out with the splits'. Every invocation must
// call it.
fn merge_splits(lid: u32) {
    let hd = wp.head_dim;
    let hd4 = hd / 4u;
    let n = step.splits;
    let stride4 = part_stride(hd) / 4u;
    let k4 = wp.k / 4u;
    if (OWN) {
        // Heads are multiples of 16 wide, so a vec4 never straddles two.
        let g = min(lid, k4 - 1u);
        let h = g / hd4;
        let d4 = g - h * hd4;
        let at = own_base(wp.k / hd, n, hd) / 4u + 3u * h * hd4 + d4;
        let v = x[at + 2u * hd4];
        own_dots[lid] = select(0.0, dot(x[at], x[at + hd4]), lid < k4);
        let r = splits_merged(h * n, n, stride4, hd, d4);
        workgroupBarrier();
        var own = 0.0;
        for (var j = h * hd4; j < (h + 1u) * hd4; j++) { own += own_dots[j]; }
        let m = max(r.m, own);
        let split_w = exp(r.m - m);
        let own_w = exp(own - m);
        if (lid < k4) { xm[lid] = (split_w * r.s.v + own_w * v) / (split_w * r.s.l + own_w); }
    } else {
        for (var g = lid; g < k4; g += 256u) {
            let r = splits_merged(g / hd4 * n, n, stride4, hd, g % hd4);
            xm[g] = r.s.v / r.s.l;
        }
    }
    workgroupBarrier();
}

// x's columns 4gi..4gi+3 for the token at xb: from xm where MERGE made it.
fn x4(xb: u32, gi: u32) -> vec4<f32> {
    if (MERGE_VEC4S > 1u) { return xm[gi]; }
    return x[xb + gi];
}

// The token whose row of x this dispatch reads: the step's last with flag 4, else the first.
fn token() -> u32 {
    if ((wp.flags & 4u) != 0u) { return step.n_tok - 1u; }
    return 0u;
}

// Output row o's value v, plus its bias and y's old value where the flags ask.
fn write_row(o: u32, v: f32) {
    var out = v;
    if ((wp.flags & 2u) != 0u) { out += bias[o]; }
    if ((wp.flags & 1u) != 0u) { out += y[o]; }
    y[o] = out;
}

// Row r's weights at columns 4g..4g+3, and with GLU its up row's. Groups past the row's
// end (g >= n4) read the last group again, so callers need no branch that would keep their
// loads apart.
struct Weights4 { w: vec4<f32>, up: vec4<f32> }

fn weights4(r: u32, g: u32, n4: u32, glu: bool) -> Weights4 {
    let gi = min(g, n4 - 1u);
    var out = Weights4(load4(r, 4u * gi), vec4<f32>(0.0));
    if (glu) { out.up = load4(r + wp.rows, 4u * gi); }
    return out;
}

// Those weights against x, as a row's sums (zero past the row's end): `a` = (dot, dot with
// the up row, sum of squares of x), or with POST `a` = (both dots with r∘g, both with
// x∘p∘g) and `b` = (|r|², r·(x∘p), |x∘p|², |x|²).
fn apply4(wt: Weights4, xb: u32, g: u32, n4: u32, norm: bool, glu: bool) -> Pair {
    let gi = min(g, n4 - 1u);
    var xv = x4(xb, gi);
    var out = Pair(vec4<f32>(0.0), vec4<f32>(0.0));
    if (POST) {
        let r = res_in[xb + gi];
        let xp = xv * norm_w[gi];
        let nw = norm_w[gi + n4];
        let rg = r * nw;
        let xg = xp * nw;
        out.a = vec4<f32>(dot(wt.w, rg), 0.0, dot(wt.w, xg), 0.0);
        if (glu) {
            out.a.y = dot(wt.up, rg);
            out.a.w = dot(wt.up, xg);
        }
        out.b = vec4<f32>(dot(r, r), dot(r, xp), dot(xp, xp), dot(xv, xv));
    } else {
        if (norm) {
            out.a.z = dot(xv, xv);
            xv *= norm_w[gi];
        }
        out.a.x = dot(wt.w, xv);
        if (glu) { out.a.y = dot(wt.up, xv); }
    }
    let live = g < n4;
    return Pair(select(vec4<f32>(0.0), out.a, live), select(vec4<f32>(0.0), out.b, live));
}

fn add(p: Pair, q: Pair) -> Pair {
    return Pair(p.a + q.a, p.b + q.b);
}

fn group4(r: u32, xb: u32, g: u32, n4: u32, norm: bool, glu: bool) -> Pair {
    return apply4(weights4(r, g, n4, glu), xb, g, n4, norm, glu);
}

override LANES: u32 = 32u;
override ROWS_PER_WG: u32 = 256u / LANES;
#include reduce

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let lane = lid % LANES;
    let row_in_wg = lid / LANES;
    // One token per dispatch (decode, or a prefill's last token), so the grid's y extends x
    // past its 65535 workgroups.
    let wg = wid.x + wid.y * 65535u;
    let r = wg * ROWS_PER_WG + row_in_wg;
    let norm = (wp.flags & 8u) != 0u;
    let glu = (wp.flags & 16u) != 0u;
    let n4 = wp.k / 4u;
    let xb = token() * n4;
    // The first four groups' weights go out before MERGE, whose barrier would hold them
    // back. (Rows past the end load the last row and write nothing.)
    let rr = min(r, wp.rows - 1u);
    let w0 = weights4(rr, lane, n4, glu);
    let w1 = weights4(rr, lane + LANES, n4, glu);
    let w2 = weights4(rr, lane + 2u * LANES, n4, glu);
    let w3 = weights4(rr, lane + 3u * LANES, n4, glu);
    if (MERGE_VEC4S > 1u) { merge_splits(lid); }
    var acc = add(add(apply4(w0, xb, lane, n4, norm, glu), apply4(w1, xb, lane + LANES, n4, norm, glu)),
                  add(apply4(w2, xb, lane + 2u * LANES, n4, norm, glu), apply4(w3, xb, lane + 3u * LANES, n4, norm, glu)));
    // Four groups per iteration while four remain: their loads are independent, so they are
    // all in flight at once (on GPUs the lanes usually cover a row in the first four). Then
    // one at a time: a last few (Gemma's gate/up rows at 32 lanes: one) cost no more than
    // themselves.
    var g = lane + 4u * LANES;
    for (; g + 3u * LANES < n4; g += 4u * LANES) {
        acc = add(acc, add(add(group4(rr, xb, g, n4, norm, glu), group4(rr, xb, g + LANES, n4, norm, glu)),
                           add(group4(rr, xb, g + 2u * LANES, n4, norm, glu), group4(rr, xb, g + 3u * LANES, n4, norm, glu))));
    }
    for (; g < n4; g += LANES) {
        acc = add(acc, group4(rr, xb, g, n4, norm, glu));
    }
    var dots = vec2<f32>(0.0);
    if (POST) {
        acc = reduce_pair(acc, lid, lane);
        let k = f32(wp.k);
        let a = inverseSqrt(acc.b.w / k + wp.eps);
        let inv = inverseSqrt((acc.b.x + 2.0 * a * acc.b.y + a * a * acc.b.z) / k + wp.eps);
        dots = inv * (acc.a.xy + a * acc.a.zw);
        // Every lane of the row has the sums; the first row writes the new residual.
        if (wg == 0u && row_in_wg == 0u) {
            for (var g = lane; g < n4; g += LANES) {
                res_out[xb + g] = res_in[xb + g] + a * x[xb + g] * norm_w[g];
            }
        }
    } else {
        let s = reduce_row(acc.a, lid, lane);
        dots = s.xy;
        if (norm) { dots *= inverseSqrt(s.z / f32(wp.k) + wp.eps); }
    }
    if (lane == 0u && r < wp.rows) {
        let o = wp.out_offset + r;
        var v = dots.x;
        if (glu) { v = activation(v, wp.flags >> 8u) * dots.y; }
        write_row(o, v);
    }
}

// Rows r0..r0+7's dot products with x's columns 4g..4g+3 (rows past the end read the last
// row again, so the loads need no branch).
fn rows8(r0: u32, g: u32, xv: vec4<f32>) -> array<vec4<f32>, 2> {
    let k = 4u * g;
    let last = wp.rows - 1u;
    return array<vec4<f32>, 2>(
        vec4<f32>(dot4(min(r0, last), k, xv), dot4(min(r0 + 1u, last), k, xv), dot4(min(r0 + 2u, last), k, xv),
                  dot4(min(r0 + 3u, last), k, xv)),
        vec4<f32>(dot4(min(r0 + 4u, last), k, xv), dot4(min(r0 + 5u, last), k, xv), dot4(min(r0 + 6u, last), k, xv),
                  dot4(min(r0 + 7u, last), k, xv)));
}

// Rows r0..r0+7 for each group of lanes (NORM, bias and accumulate as in main; no GLU or
// POST). With NORM, x's sum of squares rides along as in main, so no barrier holds back
// the weight loads.
@compute @workgroup_size(256)
fn many(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let lane = lid % LANES;
    let wg = wid.x + wid.y * 65535u;
    let r0 = (wg * ROWS_PER_WG + lid / LANES) * 8u;
    let norm = (wp.flags & 8u) != 0u;
    let n4 = wp.k / 4u;
    let xb = token() * n4;
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    var ss = 0.0;
    for (var g = lane; g < n4; g += LANES) {
        var xv = x[xb + g];
        if (norm) { ss += dot(xv, xv); xv *= norm_w[g]; }
        let a = rows8(r0, g, xv);
        lo += a[0];
        hi += a[1];
    }
    // Barriers between the reductions, which share their workgroup memory.
    lo = reduce_row(lo, lid, lane);
    workgroupBarrier();
    hi = reduce_row(hi, lid, lane);
    if (norm) {
        workgroupBarrier();
        let inv = inverseSqrt(reduce_row(vec4<f32>(ss, 0.0, 0.0, 0.0), lid, lane).x / f32(wp.k) + wp.eps);
        lo *= inv;
        hi *= inv;
    }
    if (lane == 0u) {
        for (var i = 0u; i < 8u && r0 + i < wp.rows; i++) {
            write_row(wp.out_offset + r0 + i, select(hi[i % 4u], lo[i % 4u], i < 4u));
        }
    }
}
