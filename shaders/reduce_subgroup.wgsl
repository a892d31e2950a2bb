// Sums of a matvec row's LANES partial results with subgroup shuffles: no barrier where a
// subgroup holds the whole row (SG_MIN >= LANES, e.g. 32 on NVIDIA). Subgroups are blocks
// of consecutive invocations at least SG_MIN long, so lanes lid ^ o (o < SG_MIN) share one;
// rows wider than that add their blocks' sums through workgroup memory. Every invocation
// of the workgroup must call it; every lane of the row gets the row's totals. A second call
// must follow a barrier: invocations may still be reading the first one's sums from
// `partial`. (SG_MIN is an override the engine declares wherever a subgroup include is
// used.) `reduce_pair` sums two vectors at once, behind the same one barrier.
struct Pair { a: vec4<f32>, b: vec4<f32> }
var<workgroup> partial: array<vec4<f32>, 256>;
var<workgroup> partial_pairs: array<Pair, 256>;

fn reduce_pair(v: Pair, lid: u32, lane: u32) -> Pair {
    var s = v;
    let within = min(LANES, SG_MIN);
    for (var o = 1u; o < within; o <<= 1u) {
        s = Pair(s.a + subgroupShuffleXor(s.a, o), s.b + subgroupShuffleXor(s.b, o));
    }
    if (within == LANES) { return s; }
    partial_pairs[lid] = s;
    workgroupBarrier();
    var total = Pair(vec4<f32>(0.0), vec4<f32>(0.0));
    for (var b = 0u; b < LANES; b += within) {
        let p = partial_pairs[lid - lane + b];
        total = Pair(total.a + p.a, total.b + p.b);
    }
    return total;
}

fn reduce_row(v: vec4<f32>, lid: u32, lane: u32) -> vec4<f32> {
    var s = v;
    let within = min(LANES, SG_MIN);
    for (var o = 1u; o < within; o <<= 1u) { s += subgroupShuffleXor(s, o); }
    if (within == LANES) { return s; }
    partial[lid] = s;
    workgroupBarrier();
    var total = vec4<f32>(0.0);
    for (var b = 0u; b < LANES; b += within) { total += partial[lid - lane + b]; }
    return total;
}
