//! The engine against llama.cpp on the same real GGUF files (goldens from
//! scripts/make-goldens): tokenization, teacher-forced argmax wherever llama.cpp's top-2
//! margin exceeds 0.5, first-step logits, greedy text up to the first near-tie, and
//! perplexity by llama-perplexity's method. Also: untrusted text never yields control tokens.

mod common;

use gloss_engine::{Flow, GenerateOptions, Sampling};
use serde_json::Value;

const NEAR_TIE: f64 = 0.5;
/// Max error over the first step's top 64 logits, each taken relative to its side's top
/// logit (softmax ignores a common shift). llama.cpp's CPU path quantizes activations to 8
/// bits inside quantized matmuls while we keep them in f32; across 30 layers the two
/// roundings drift apart by a few tenths of a logit on a ~18-logit scale.
const LOGIT_TOL: f64 = 0.6;

fn golden(name: &str) -> Value {
    let p = common::root().join("tests/golden").join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}
fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn check_model(file: &str, prefix: &str, prompts: &[&str]) {
    let mut engine = common::engine(file, 256);
    let vocab = engine.model.cfg.vocab;
    for p in prompts {
        let g = golden(&format!("{prefix}-{p}"));
        let text = std::fs::read_to_string(common::root().join("tests/prompts").join(format!("{p}.txt"))).unwrap();
        let prompt = engine.tokenizer.encode(&text, true, true).unwrap();
        assert_eq!(prompt, ids(&g["prompt_ids"]), "{prefix}/{p}: tokenization differs from llama.cpp");

        // Teacher forcing over llama.cpp's prompt + continuation.
        let gen = ids(&g["generated_ids"]);
        let all: Vec<u32> = prompt.iter().chain(&gen).copied().collect();
        let logits = pollster::block_on(engine.score(&all)).unwrap();
        let (want, margins) = (ids(&g["forced_argmax"]), floats(&g["forced_margins"]));
        let mut checked = 0;
        for i in 0..all.len() {
            let row = &logits[i * vocab..(i + 1) * vocab];
            let got = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
            if margins[i] > NEAR_TIE {
                assert_eq!(got, want[i], "{prefix}/{p}: argmax at position {i} (llama.cpp margin {})", margins[i]);
                checked += 1;
            }
        }
        assert!(checked >= all.len() / 2, "{prefix}/{p}: too few decisive positions to compare");
        let first = &logits[(prompt.len() - 1) * vocab..prompt.len() * vocab];
        let top = g["first_step_top"].as_array().unwrap();
        let at = |e: &Value| first[e[0].as_u64().unwrap() as usize] as f64;
        let (ours0, ref0) = (at(&top[0]), top[0][1].as_f64().unwrap());
        let max_err = top.iter().map(|e| ((at(e) - ours0) - (e[1].as_f64().unwrap() - ref0)).abs()).fold(0.0, f64::max);
        eprintln!("{prefix}/{p}: first-step max |logit error| over top 64 = {max_err:.4}");
        assert!(max_err <= LOGIT_TOL, "{prefix}/{p}: first-step logits differ by {max_err}");

        // Free-running greedy output equals llama.cpp's before its first near-tie step.
        let gm = floats(&g["generated_margins"]);
        let agree = gm.iter().position(|&m| m <= NEAR_TIE).unwrap_or(gm.len()).min(6);
        engine.reset();
        let opts = GenerateOptions { max_tokens: agree + 1, sampling: Sampling::greedy(), stop: vec![], ..Default::default() };
        let out = pollster::block_on(engine.generate(&prompt, &opts, |_| Flow::Continue)).unwrap();
        assert!(out.tokens.len() > agree, "{prefix}/{p}: generation stopped early");
        assert_eq!(out.tokens[..agree], gen[..agree], "{prefix}/{p}: greedy tokens before the first near-tie");
    }
}

#[test]
fn smollm2_matches_llama_cpp() {
    check_model(common::SMOLLM2, "smollm2", &["capital", "chatml", "story"]);
}

#[test]
fn gemma3_matches_llama_cpp() {
    check_model(common::GEMMA3, "gemma3", &["capital", "story"]);
}

/// Page text is untrusted: a control token's text in it stays text, whichever way the call
/// before parsed (whether control tokens are parsed is a flag of the one tokenizer, set per
/// call).
#[test]
fn control_tokens_come_only_from_trusted_text() {
    let engine = common::engine(common::SMOLLM2, 64);
    let tk = &engine.tokenizer;
    let text = "<|im_start|>system";
    let trusted = tk.encode(text, false, true).unwrap();
    assert!(tk.is_control(trusted[0]), "trusted text: <|im_start|> is a control token ({trusted:?})");
    for _ in 0..2 {
        let untrusted = tk.encode(text, false, false).unwrap();
        assert!(untrusted.iter().all(|&id| !tk.is_control(id)), "untrusted text became control tokens: {untrusted:?}");
        assert_eq!(tk.decode(&untrusted), text);
        assert_eq!(tk.encode(text, false, true).unwrap(), trusted, "parsing again after untrusted text");
    }
}

/// Perplexity over the GPL-3 text by llama-perplexity's method, against llama.cpp's value
/// for `ctx`-token chunks (tests/golden/{prefix}-ppl-c{ctx}{suffix}.txt).
fn check_perplexity(file: &str, prefix: &str, ctx: usize, chunks: usize, golden: &str, tol: f64) {
    let want: f64 = std::fs::read_to_string(common::root().join(format!("tests/golden/{prefix}-ppl-{golden}.txt")))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let text = std::fs::read_to_string(common::root().join("tests/data/gpl-3.txt")).unwrap();
    let mut engine = common::engine(file, ctx);
    let got = pollster::block_on(engine.perplexity(&text, ctx, chunks, |_, _| {})).unwrap();
    let rel = (got - want).abs() / want;
    eprintln!("{prefix}: PPL {got:.4} vs llama.cpp {want:.4} ({:.2}%)", rel * 100.0);
    assert!(rel <= tol, "{prefix}: perplexity {got} vs llama.cpp {want}");
}

/// Two 128-token chunks: short enough for a software adapter. Over so few tokens the
/// rounding differences between the engines weigh more, hence 2%.
#[test]
fn smollm2_perplexity_close_to_llama_cpp() {
    check_perplexity(common::SMOLLM2, "smollm2", 128, 2, "c128x2", 0.02);
}

/// The whole text (14 chunks of 512, 7168 tokens) within 1%. About an hour on lavapipe, so
/// it runs on a GPU: `cargo test --release --test fidelity -- --ignored`.
#[test]
#[ignore = "7168 tokens: run on a GPU"]
fn smollm2_perplexity_full_text_within_1_percent() {
    check_perplexity(common::SMOLLM2, "smollm2", 512, usize::MAX, "c512", 0.01);
}

#[test]
#[ignore = "7168 tokens: run on a GPU"]
fn gemma3_perplexity_full_text_within_1_percent() {
    check_perplexity(common::GEMMA3, "gemma3", 512, usize::MAX, "c512", 0.01);
}
