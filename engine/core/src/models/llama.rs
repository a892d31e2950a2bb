//! `llama`: Llama 2/3.x, SmolLM, TinyLlama, Mistral-style dense models. The GGUF converter
//! permutes Q/K so the original (adjacent-pair) rope layout applies; Llama 3's
//! `rope_freqs` factors are read by the loader when present.

use super::Config;
use crate::error::Result;
use crate::gguf::Gguf;

pub fn config(g: &Gguf) -> Result<Config> {
    Config::base(g, "llama")
}
