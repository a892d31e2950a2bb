// The workgroup's (256 invocations') sum of v, for every invocation, on adapters without
// subgroups: 16 partial sums of 16, then their total (two barriers, not a tree of eight).
// Every invocation must call it, once per dispatch.
var<workgroup> block_sums: array<vec2<f32>, 272>;

fn workgroup_sum(v: vec2<f32>, lid: u32) -> vec2<f32> {
    block_sums[lid] = v;
    workgroupBarrier();
    if (lid < 16u) {
        var p = vec2<f32>(0.0);
        for (var i = 0u; i < 16u; i++) { p += block_sums[16u * lid + i]; }
        block_sums[256u + lid] = p;
    }
    workgroupBarrier();
    var total = vec2<f32>(0.0);
    for (var i = 0u; i < 16u; i++) { total += block_sums[256u + i]; }
    return total;
}
