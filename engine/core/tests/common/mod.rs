//! Shared test helpers: the real GPU adapter (lavapipe or SwiftShader in CI), real models.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use gloss_engine::{Engine, FileSource, Gpu, Options};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn gpu() -> Arc<Gpu> {
    Arc::new(pollster::block_on(Gpu::new()).expect("a GPU adapter (lavapipe/SwiftShader in CI)"))
}

/// Loads a model from models/ (fetched by scripts/fetch-models).
pub fn engine(file: &str, ctx: usize) -> Engine {
    let path = root().join("models").join(file);
    let mut src = FileSource::open(&path).unwrap_or_else(|e| panic!("{e}: run scripts/fetch-models"));
    pollster::block_on(Engine::load(gpu(), &mut src, &Options { ctx, max_batch: 64 })).expect("model loads")
}

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";
