//! `gemma3`: q/k norms, norms after attention and FFN, GeGLU, embeddings scaled by
//! sqrt(n_embd), and sliding-window attention on 5 of every 6 layers (as llama.cpp:
//! layer i is local unless i % pattern == pattern - 1), whose rope uses base 10000.

use super::{Activation, Config};
use crate::error::{Error, Result};
use crate::gguf::Gguf;

pub fn config(g: &Gguf) -> Result<Config> {
    if g.get_f64("gemma3.final_logit_softcapping").is_some_and(|c| c > 0.0) {
        return Err(Error::Unsupported("gemma3 with final logit soft-capping".into()));
    }
    let base = Config::base(g, "gemma3")?;
    let window = g.get_u64("gemma3.attention.sliding_window").unwrap_or(0) as usize;
    let pattern = g.get_u64("gemma3.attention.sliding_window_pattern").unwrap_or(6) as usize;
    let swa_layers = (0..base.n_layer)
        .map(|i| window > 0 && (pattern == 0 || i % pattern < pattern - 1))
        .collect();
    // 27B scales queries by 1/sqrt(n_embd / n_head) (gemma_pytorch's query_pre_attn_scalar).
    let attn_scale = if base.n_layer == 62 {
        1.0 / ((base.n_embd / base.n_head) as f32).sqrt()
    } else {
        1.0 / (base.head_dim as f32).sqrt()
    };
    Ok(Config {
        rope_neox: true,
        rope_base_swa: g.get_f64("gemma3.rope.freq_base_swa").unwrap_or(10000.0) as f32,
        window,
        swa_layers,
        attn_scale,
        embed_scale: (base.n_embd as f32).sqrt(),
        act: Activation::GeluTanh,
        qk_norm: true,
        post_norms: true,
        ..base
    })
}
