// Decode attention that makes its own q, k and v from the layer's input (GPUs, small heads;
// in browsers: Tuning::project_attention): the q/k/v matvec's dispatch is gone from every
// layer (SmolLM2: 5 dispatches a layer -> 4), for more GPU work, since every split projects
// its head's q again. Appended to attention.wgsl, with the stacked q/k/v weights' `load4`
// (quant.wgsl).
//
// Workgroup (head h, split s), h < n_head: projects q_h = W_q[h] · RMSnorm(x) itself (every
// split again: the rows come from the cache after the first), norms, rotates and scales it,
// and attends over the split's cached keys before this step's position. Workgroups n_head +
// 2j and n_head + 2j + 1 (split 0 only) project kv head j's key and value: they append them
// to the cache and leave them, as split 0's workgroups leave each head's q, after the
// splits' partials (attention_partials.wgsl's own_base). The output projection's merge
// (matvec.wgsl's OWN) adds this step's key as one more split. No workgroup both projects a
// key and attends, so the longest path is one projection of head_dim rows and one tile.
//
// Bindings beyond attention.wgsl's: the layer's input x is `q` (binding 0), `norm_w` holds
// the input norm's weights (wp.k of them), then the q and k norms'.

struct ProjParams { k: u32, scale_base: u32, _p0: u32, _p1: u32 }
// Rounds of eight groups of 4 columns that cover a row's share for one lane (the engine's).
override PROJECTION_ROUNDS: u32 = 1u;
@group(0) @binding(9) var<storage, read> w: array<u32>;
@group(0) @binding(10) var<uniform> wp: ProjParams;

// Group g's share of row r: its weights' dot product with x∘(norm weights), staged in
// `red` (zero past the row's n4 groups, which read the last again: no branch).
fn term(r: u32, g: u32, n4: u32) -> f32 {
    let c = 4u * min(g, n4 - 1u);
    return select(0.0, dot4(r, c, vec4<f32>(red[c], red[c + 1u], red[c + 2u], red[c + 3u])), g < n4);
}

// Row row0 + i of W · RMSnorm(x) for invocation i < head_dim (0 for the others). x∘(norm
// weights) goes to workgroup memory first (wp.k is at most 2048), with x's sum of squares;
// then 256 / head_dim lanes a row each take every lanes-th group of 4 columns,
// PROJECTION_ROUNDS rounds of eight (a constant of the pipeline, so the compiler can issue
// every round's weight loads at once). Every invocation must call it.
fn project(row0: u32) -> f32 {
    let lid = local_id;
    let hd = ap.head_dim;
    let n4 = wp.k / 4u;
    var ss = 0.0;
    for (var c = lid; c < n4; c += WG) {
        let xv = vec4<f32>(q[4u * c], q[4u * c + 1u], q[4u * c + 2u], q[4u * c + 3u]);
        let p = xv * vec4<f32>(norm_w[4u * c], norm_w[4u * c + 1u], norm_w[4u * c + 2u], norm_w[4u * c + 3u]);
        ss += dot(xv, xv);
        red[4u * c] = p.x;
        red[4u * c + 1u] = p.y;
        red[4u * c + 2u] = p.z;
        red[4u * c + 3u] = p.w;
    }
    // (Its barrier also publishes the staged x.)
    let inv = inverseSqrt(workgroup_sum(vec2<f32>(ss, 0.0), lid).x / f32(wp.k) + ap.eps);
    let lanes = WG / hd;
    let r = row0 + lid / lanes;
    let lane = lid % lanes;
    var acc = 0.0;
    for (var i = 0u; i < PROJECTION_ROUNDS; i++) {
        let g = lane + 8u * lanes * i;
        acc += ((term(r, g, n4) + term(r, g + lanes, n4)) + (term(r, g + 2u * lanes, n4) + term(r, g + 3u * lanes, n4)))
            + ((term(r, g + 4u * lanes, n4) + term(r, g + 5u * lanes, n4)) + (term(r, g + 6u * lanes, n4) + term(r, g + 7u * lanes, n4)));
    }
    // Each row's lanes' sums, through kc (free until prepare, after one more barrier).
    kc[lid] = acc;
    workgroupBarrier();
    var sum = 0.0;
    if (lid < hd) {
        for (var i = lid * lanes; i < (lid + 1u) * lanes; i++) { sum += kc[i]; }
    }
    workgroupBarrier();
    return sum * inv;
}

// Workgroup n_head + j: this step's key (j even) or value (j odd) of kv head j / 2, into the
// cache at `pos` and beside each of its query heads' q.
fn own_kv(j: u32, pos: u32) {
    let lid = local_id;
    let hd = ap.head_dim;
    let kvh = j / 2u;
    let is_v = (j & 1u) == 1u;
    var nw = vec2<f32>(1.0);
    if ((ap.flags & 4u) != 0u) { nw.y = norm_w[wp.k + hd + min(lid, hd - 1u)]; }
    let raw = project(ap.n_head * hd + select(0u, ap.n_kv * hd, is_v) + kvh * hd);
    prepare(select(vec3<f32>(0.0, raw, 0.0), vec3<f32>(0.0, 0.0, raw), is_v), nw, true, pos);
    // (prepare's last writes are each invocation's own; the cache takes them in pairs.)
    workgroupBarrier();
    append_own((pos * ap.n_kv + kvh) * (hd / 2u), !is_v, is_v);
    if (lid < hd) {
        let value = select(kc[lid], vc[lid], is_v);
        let group = ap.n_head / ap.n_kv;
        let base = own_base(ap.n_head, step.splits, hd);
        for (var h = kvh * group; h < (kvh + 1u) * group; h++) {
            part[base + (3u * h + 1u + u32(is_v)) * hd + lid] = value;
        }
    }
}

@compute @workgroup_size(256)
fn partial_projected(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    local_id = lid;
    let pos = step.pos0;
    if (wid.x >= ap.n_head) {
        if (wid.y == 0u) { own_kv(wid.x - ap.n_head, pos); }
        return;
    }
    var b = block(wid);
    // This step's key joins in the merge.
    b.hi = min(b.hi, pos);
    let first = first_tile(b);
    let hd = ap.head_dim;
    var nw = vec2<f32>(1.0);
    if ((ap.flags & 4u) != 0u) { nw.x = norm_w[wp.k + min(lid, hd - 1u)]; }
    prepare(vec3<f32>(project(b.h0 * hd), 0.0, 0.0), nw, false, pos);
    if (wid.y == 0u && lid < hd) { part[own_base(ap.n_head, step.splits, hd) + 3u * b.h0 * hd + lid] = qs[lid]; }
    attend(b, wid.y, false, pos, first, false);
}
