// The gate activations of gated FFNs, shared by glu.wgsl and the fused GLU of matvec.wgsl
// and matmul.wgsl.
// act 0 = SiLU (SwiGLU), 1 = tanh-approximated GELU (GeGLU, Gemma).
fn activation(g: f32, act: u32) -> f32 {
    if (act == 0u) {
        return g / (1.0 + exp(-g));
    }
    let inner = 0.7978845608028654 * (g + 0.044715 * g * g * g);
    // tanh via exp, clamped: WGSL's tanh may overflow to NaN for large inputs.
    let e = exp(-2.0 * abs(inner));
    let th = sign(inner) * (1.0 - e) / (1.0 + e);
    return 0.5 * g * (1.0 + th);
}
