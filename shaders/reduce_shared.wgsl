// Sums of a matvec row's LANES partial results through workgroup memory (adapters without
// subgroups). Every invocation of the workgroup must call it; every lane of the row gets
// the row's totals. A second call must follow a barrier (as reduce_subgroup.wgsl's).
// `reduce_pair` sums two vectors, one after the other.
struct Pair { a: vec4<f32>, b: vec4<f32> }
var<workgroup> partial: array<vec4<f32>, 256>;

fn reduce_row(v: vec4<f32>, lid: u32, lane: u32) -> vec4<f32> {
    if (LANES == 1u) { return v; }
    partial[lid] = v;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) { partial[lid] += partial[lid + s]; }
        workgroupBarrier();
    }
    return partial[lid - lane];
}

fn reduce_pair(v: Pair, lid: u32, lane: u32) -> Pair {
    let a = reduce_row(v.a, lid, lane);
    workgroupBarrier();
    return Pair(a, reduce_row(v.b, lid, lane));
}
