//! Gloss engine: GGUF language models on the GPU through wgpu (WebGPU in the browser,
//! Vulkan/Metal/DX12 natively), one code path for both.

#[cfg(target_arch = "wasm32")]
mod browser_subgroups;
pub mod chat;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod gpu;
pub mod models;
pub mod quant;
pub mod sampling;
pub mod tokenizer;
pub mod transformer;

pub use chat::{ChatTemplate, Message};
pub use engine::{Chat, Engine, Flow, GenerateOptions, Generation, ModelInfo, StopReason};
pub use error::{Error, Result};
pub use gguf::{ByteSource, Gguf};
pub use gpu::{Gpu, Tuning};
pub use sampling::Sampling;
pub use transformer::Options;

#[cfg(not(target_arch = "wasm32"))]
pub use gguf::FileSource;
