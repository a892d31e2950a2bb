// Q8_0 weights' dot product with 4 values of x, where WGSL has packed 8-bit integers
// (`packed_4x8_integer_dot_product`, which naga always has and browsers report): the
// bytes unpacked by one builtin and the block's scale applied once to the sum. For the
// bandwidth-bound vocabulary heads (matvec.wgsl's `many`): Gemma 3's Q8_0 head on an
// H100 115 -> 107 µs. (The builtin in every Q8_0 load, scale applied per value, measured
// slower: 119 µs.)
fn dot4_q8_0(r: u32, k: u32, xv: vec4<f32>) -> f32 {
    let blk = (r * wp.k + k) >> 5u;
    let word = w[blk * 8u + ((k & 31u) >> 2u)];
    return dot(vec4<f32>(unpack4xI8(word)), xv) * f16_scale(blk);
}
