// Sum of a matvec row's LANES partial results through workgroup memory (adapters without
// subgroups). Every invocation of the workgroup must call it; lane 0 gets the row's total.
// A second call must follow a barrier (as reduce_subgroup.wgsl's).
var<workgroup> partial: array<vec4<f32>, 256>;

fn reduce_row(v: vec4<f32>, lid: u32, lane: u32) -> vec4<f32> {
    if (LANES == 1u) { return v; }
    partial[lid] = v;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) { partial[lid] += partial[lid + s]; }
        workgroupBarrier();
    }
    return partial[lid];
}
