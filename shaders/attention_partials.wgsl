// The layout of attention's key-split partials (attention.wgsl and attention_prefill.wgsl
// write them; attention.wgsl's combine and matvec.wgsl's MERGE read them): per (token,
// head, split), head_dim accumulators, then max, then sum, padded to whole vec4s so MERGE
// reads them as vec4s. Floats per (token, head, split):
fn part_stride(hd: u32) -> u32 {
    return hd + 4u;
}
