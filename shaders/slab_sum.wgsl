// The sum at index i of a split matmul's slabs (matmul.wgsl): `splits` slabs of `size`
// floats each. The including kernel declares `slabs: array<f32>`.
fn slab_sum(i: u32, size: u32, splits: u32) -> f32 {
    var v = 0.0;
    for (var z = 0u; z < splits; z++) { v += slabs[z * size + i]; }
    return v;
}
