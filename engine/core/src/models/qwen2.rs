//! `qwen2`: Qwen2/2.5. Llama-like with biases on Q, K and V and NeoX rope.

use super::Config;
use crate::error::Result;
use crate::gguf::Gguf;

pub fn config(g: &Gguf) -> Result<Config> {
    Ok(Config { rope_neox: true, qkv_bias: true, ..Config::base(g, "qwen2")? })
}
