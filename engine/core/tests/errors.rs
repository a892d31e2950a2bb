//! Bad input gets a specific error, never a panic.

mod common;

use gloss_engine::gguf::writer::{write, TensorData};
use gloss_engine::gguf::Value;
use gloss_engine::quant::GgmlType;
use gloss_engine::{Engine, Error, Gguf, Options};

fn load(mut bytes: Vec<u8>) -> Result<Engine, Error> {
    pollster::block_on(async {
        Gguf::read(&mut bytes).await?;
        Engine::load(common::gpu(), &mut bytes, &Options { ctx: 64, max_batch: 8 }).await
    })
}

fn tiny(arch: &str, embd_rows: u64) -> (Vec<(String, Value)>, Vec<TensorData>) {
    let md = vec![
        ("general.architecture".to_string(), Value::String(arch.into())),
        (format!("{arch}.block_count"), Value::U32(1)),
        (format!("{arch}.embedding_length"), Value::U32(32)),
        (format!("{arch}.attention.head_count"), Value::U32(2)),
        (format!("{arch}.feed_forward_length"), Value::U32(64)),
    ];
    let t = vec![TensorData { name: "token_embd.weight".into(), dims: vec![32, embd_rows], ty: GgmlType::F32, bytes: vec![0; 32 * embd_rows as usize * 4] }];
    (md, t)
}

#[test]
fn truncated_file_is_reported() {
    let path = common::root().join("models").join(common::SMOLLM2);
    let full = std::fs::read(path).unwrap();
    for cut in [10usize, 1000, 3_000_000, full.len() - 100] {
        let err = load(full[..cut].to_vec()).err().expect("truncated file must fail");
        assert!(matches!(err, Error::Corrupt(_)), "cut at {cut}: {err}");
        assert!(err.to_string().contains("truncated"), "cut at {cut}: {err}");
    }
}

#[test]
fn not_gguf_is_reported() {
    let err = load(b"PK\x03\x04 this is a zip file, not a model".to_vec()).err().unwrap();
    assert!(err.to_string().contains("not a GGUF file"), "{err}");
}

#[test]
fn unsupported_architecture_is_named() {
    let (md, t) = tiny("mamba", 4);
    let err = load(write(&md, &t)).err().unwrap();
    assert!(matches!(err, Error::Unsupported(_)) && err.to_string().contains("`mamba`"), "{err}");
}

#[test]
fn unsupported_quant_type_is_named() {
    let (md, t) = tiny("llama", 4);
    let mut bytes = write(&md, &t);
    // Patch the tensor's type id (F32 = 0) to Q2_K (10): the u32 after the dims.
    let name = b"token_embd.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len() + 4 + 16;
    bytes[at..at + 4].copy_from_slice(&10u32.to_le_bytes());
    let err = load(bytes).err().unwrap();
    assert!(err.to_string().contains("Q2_K") && err.to_string().contains("not supported"), "{err}");
}

#[test]
fn shape_mismatch_is_reported() {
    let (mut md, t) = tiny("llama", 4);
    md.push(("tokenizer.ggml.model".into(), Value::String("gpt2".into())));
    md.push(("tokenizer.ggml.tokens".into(), Value::Array((0..5).map(|i| Value::String(format!("t{i}"))).collect())));
    md.push(("tokenizer.ggml.merges".into(), Value::Array(vec![])));
    md.push(("tokenizer.ggml.pre".into(), Value::String("gpt2".into())));
    let err = load(write(&md, &t)).err().unwrap();
    // 5 tokens in the vocabulary, 4 rows in the embedding.
    assert!(matches!(err, Error::Corrupt(_)) && err.to_string().contains("has shape [32, 4]"), "{err}");
}
