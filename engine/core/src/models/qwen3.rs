//! `qwen3`: Qwen3 dense. No QKV biases; RMSNorm on each query and key head before rope.

use super::Config;
use crate::error::Result;
use crate::gguf::Gguf;

pub fn config(g: &Gguf) -> Result<Config> {
    Ok(Config { rope_neox: true, qk_norm: true, ..Config::base(g, "qwen3")? })
}
