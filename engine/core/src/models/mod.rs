//! Model families. Each file reads its family's hyper-parameters from GGUF metadata into
//! one [`Config`]; the decoder in `transformer.rs` runs any of them.

mod gemma3;
mod llama;
mod qwen2;
mod qwen3;

use crate::error::{Error, Result};
use crate::gguf::Gguf;

pub const SUPPORTED: &[&str] = &["llama", "qwen2", "qwen3", "gemma3"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    GeluTanh,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub arch: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub vocab: usize,
    pub ctx_train: usize,
    pub rms_eps: f32,
    pub n_rot: usize,
    /// NeoX rotates (i, i + n_rot/2); the original layout rotates adjacent pairs.
    pub rope_neox: bool,
    pub rope_base: f32,
    pub rope_scale: f32,
    /// Gemma's sliding-window layers use their own rope base.
    pub rope_base_swa: f32,
    /// Sliding window size in tokens (0 = none) and which layers use it.
    pub window: usize,
    pub swa_layers: Vec<bool>,
    pub attn_scale: f32,
    /// Multiplier on token embeddings (Gemma: sqrt(n_embd)).
    pub embed_scale: f32,
    pub act: Activation,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    /// Gemma's extra norms on the attention and FFN outputs before the residual add.
    pub post_norms: bool,
}

impl Config {
    pub fn from_gguf(g: &Gguf) -> Result<Config> {
        let arch = g
            .get_str("general.architecture")
            .ok_or_else(|| Error::Corrupt("metadata key `general.architecture` is missing".into()))?;
        match arch {
            "llama" => llama::config(g),
            "qwen2" => qwen2::config(g),
            "qwen3" => qwen3::config(g),
            "gemma3" => gemma3::config(g),
            other => Err(Error::Unsupported(format!(
                "model architecture `{other}`; supported: {}",
                SUPPORTED.join(", ")
            ))),
        }
    }

    /// Hyper-parameters shared by every family, read under the `{arch}.` prefix.
    fn base(g: &Gguf, arch: &str) -> Result<Config> {
        let key = |k: &str| format!("{arch}.{k}");
        let n_embd = g.require_u64(&key("embedding_length"))? as usize;
        let n_head = g.require_u64(&key("attention.head_count"))? as usize;
        let n_layer = g.require_u64(&key("block_count"))? as usize;
        if n_head == 0 || n_layer == 0 || n_embd == 0 {
            return Err(Error::Corrupt("zero heads, layers or embedding size in metadata".into()));
        }
        let n_kv_head = g.get_u64(&key("attention.head_count_kv")).unwrap_or(n_head as u64) as usize;
        if n_kv_head == 0 || n_head % n_kv_head != 0 {
            return Err(Error::Corrupt(format!("{n_head} query heads cannot share {n_kv_head} kv heads")));
        }
        let head_dim = g.get_u64(&key("attention.key_length")).map_or(n_embd / n_head, |v| v as usize);
        let vocab = g
            .get_u64(&key("vocab_size"))
            .map(|v| v as usize)
            .or_else(|| g.get("tokenizer.ggml.tokens").and_then(|t| t.as_array()).map(|a| a.len()))
            .ok_or_else(|| Error::Corrupt("no vocabulary size in metadata".into()))?;
        let rope_scale = match g.get_str(&key("rope.scaling.type")) {
            None | Some("none") => 1.0,
            Some("linear") => 1.0 / g.get_f64(&key("rope.scaling.factor")).unwrap_or(1.0) as f32,
            Some(other) => return Err(Error::Unsupported(format!("rope scaling type `{other}`"))),
        };
        Ok(Config {
            arch: arch.to_string(),
            n_layer,
            n_embd,
            n_head,
            n_kv_head,
            head_dim,
            n_ff: g.require_u64(&key("feed_forward_length"))? as usize,
            vocab,
            ctx_train: g.get_u64(&key("context_length")).unwrap_or(2048) as usize,
            rms_eps: g.get_f64(&key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5) as f32,
            n_rot: g.get_u64(&key("rope.dimension_count")).map_or(head_dim, |v| v as usize),
            rope_neox: false,
            rope_base: g.get_f64(&key("rope.freq_base")).unwrap_or(10000.0) as f32,
            rope_scale,
            rope_base_swa: 10000.0,
            window: 0,
            swa_layers: vec![false; n_layer],
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            embed_scale: 1.0,
            act: Activation::Silu,
            qkv_bias: false,
            qk_norm: false,
            post_norms: false,
        })
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
}
