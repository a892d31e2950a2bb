// The workgroup's (256 invocations') sum of v, for every invocation: subgroup shuffles
// within each block of SG_MIN consecutive invocations (one subgroup at least; see
// reduce_subgroup.wgsl), then the blocks' sums through workgroup memory behind one barrier.
// Every invocation must call it, once per dispatch. (On an H100, this instead of two
// barriers, then in Gemma's 36 post-norm matvecs and 18 q/k norms per token: decode +5%.)
var<workgroup> block_sums: array<vec2<f32>, 256>;

fn workgroup_sum(v: vec2<f32>, lid: u32) -> vec2<f32> {
    var s = v;
    for (var o = 1u; o < SG_MIN; o <<= 1u) { s += subgroupShuffleXor(s, o); }
    if (lid % SG_MIN == 0u) { block_sums[lid / SG_MIN] = s; }
    workgroupBarrier();
    var total = vec2<f32>(0.0);
    for (var b = 0u; b < 256u / SG_MIN; b++) { total += block_sums[b]; }
    return total;
}
