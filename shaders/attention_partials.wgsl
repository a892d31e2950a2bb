// The layout of attention's key-split partials (attention.wgsl and attention_prefill.wgsl
// write them; attention.wgsl's combine and matvec.wgsl's MERGE read them): per (token,
// head, split), head_dim accumulators, then max, then sum, padded to whole vec4s so MERGE
// reads them as vec4s. Floats per (token, head, split):
fn part_stride(hd: u32) -> u32 {
    return hd + 4u;
}

// Where decode attention that projects its own q, k and v (attention_projected.wgsl) leaves,
// after its one token's split partials, each head's q, this step's key and its value (in
// that order, head_dim floats each) for matvec.wgsl's OWN merge.
fn own_base(n_head: u32, splits: u32, hd: u32) -> u32 {
    return n_head * splits * part_stride(hd);
}
