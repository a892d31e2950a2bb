//! The engine's public API, shared by the CLI and the wasm front door: load a model, then
//! generate with KV-cache reuse of the shared prompt prefix, stop strings, token limits,
//! cancellation between tokens and UTF-8-safe streaming; chat sessions on top.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::chat::{ChatTemplate, Message, TemplateSource};
use crate::error::{Error, Result};
use crate::gguf::{ByteSource, Gguf};
use crate::gpu::{AdapterSummary, Gpu};
use crate::models::Config;
use crate::sampling::{Pcg, Sampling};
use crate::tokenizer::{Tokenizer, Utf8Stream};
use crate::transformer::{Choice, Input, Logits, Options, Pending, SampleParams, Transformer, MAX_STEPS_PER_SUBMIT, SUBMITS_IN_FLIGHT};

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub vocab: usize,
    pub context: usize,
    pub context_train: usize,
    pub weight_bytes: u64,
    pub kv_cache_bytes: u64,
    pub chat_template: TemplateSource,
    pub adapter: AdapterSummary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: Sampling,
    pub stop: Vec<String>,
    /// Generate exactly `max_tokens`, through end-of-generation tokens (benchmarks, like
    /// llama-bench).
    pub ignore_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { max_tokens: 512, sampling: Sampling::default(), stop: Vec::new(), ignore_eos: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfText,
    MaxTokens,
    StopString,
    Cancelled,
    ContextFull,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub text: String,
    /// Generated ids, the end-of-generation token excluded.
    pub tokens: Vec<u32>,
    pub stop_reason: StopReason,
    pub prompt_tokens: usize,
    /// Prompt tokens served from the KV cache.
    pub reused_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    /// Per sampling step, the CPU's time to encode and submit it, and the time spent waiting
    /// for its token: where a step is bound by encoding, the first approaches the step's time.
    pub step_encode_ms: f64,
    pub step_wait_ms: f64,
}

/// What the streaming callback tells the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

pub struct Engine {
    pub model: Transformer,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    pub info: ModelInfo,
    /// Tokens whose keys and values are in the KV cache, in order.
    cached: Vec<u32>,
    /// Time between a generation's readbacks (ms) under which its submissions grow (steps
    /// a submission double) and over twice which they shrink: a submission's fixed cost
    /// spreads over its steps, and stop strings, end of text and cancellation are seen up
    /// to two submissions late (the steps past them run for nothing).
    pub submission_ms: f64,
}

/// Engine::submission_ms by default. On the H100 (1 ms steps), decode in Chrome went from
/// 1.5-2.3 ms a token with one step a submission to 0.93-1.3 with eight, and natively from
/// 920-980 to 1045-1125 tok/s (BENCHMARKS.md, session 13).
pub const SUBMISSION_MS: f64 = 8.0;

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// `performance.now()`: windows, workers and offscreen documents all have it.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// Milliseconds since an arbitrary origin, on both targets. (In browsers finer than
/// `Date.now()`'s whole milliseconds, which steps of about one millisecond need.)
pub fn now_ms() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        performance_now()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1000.0
    }
}

impl Engine {
    pub async fn load(gpu: Arc<Gpu>, src: &mut impl ByteSource, opts: &Options) -> Result<Engine> {
        let gguf = Gguf::read(src).await?;
        let cfg = Config::from_gguf(&gguf)?;
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        if tokenizer.vocab_size() != cfg.vocab {
            return Err(Error::Corrupt(format!(
                "the vocabulary has {} tokens but the model's output has {}",
                tokenizer.vocab_size(),
                cfg.vocab
            )));
        }
        let template = ChatTemplate::from_gguf(&gguf, &tokenizer);
        let opts = Options { ctx: opts.ctx.min(cfg.ctx_train), ..*opts };
        let model = Transformer::load(gpu.clone(), &gguf, src, cfg, &opts).await?;
        let info = ModelInfo {
            name: gguf.get_str("general.name").unwrap_or("unnamed").to_string(),
            architecture: model.cfg.arch.clone(),
            n_layer: model.cfg.n_layer,
            n_embd: model.cfg.n_embd,
            vocab: model.cfg.vocab,
            context: model.ctx,
            context_train: model.cfg.ctx_train,
            weight_bytes: model.weight_bytes,
            kv_cache_bytes: model.kv_bytes,
            chat_template: template.source,
            adapter: gpu.summary.clone(),
        };
        Ok(Engine { model, tokenizer, template, info, cached: Vec::new(), submission_ms: SUBMISSION_MS })
    }

    pub fn context_used(&self) -> usize {
        self.cached.len()
    }

    pub fn context_size(&self) -> usize {
        self.model.ctx
    }

    /// Forgets the KV cache (the next prompt is processed from scratch).
    pub fn reset(&mut self) {
        self.cached.clear();
    }

    /// Runs `tokens` through the model, reusing the cached prefix they share with the last
    /// call; leaves the last token unprocessed for the caller to sample from.
    async fn prefill(&mut self, tokens: &[u32]) -> Result<usize> {
        let mut reuse = self.cached.iter().zip(tokens).take_while(|(a, b)| a == b).count();
        reuse = reuse.min(tokens.len() - 1);
        self.cached.truncate(reuse);
        let body = &tokens[reuse..tokens.len() - 1];
        for chunk in body.chunks(self.model.max_batch) {
            self.model.forward(chunk, self.cached.len(), Logits::None).await?;
            self.cached.extend_from_slice(chunk);
        }
        Ok(reuse)
    }

    /// Generates a continuation of `prompt` (token ids), calling `on_text` with each new
    /// piece of text. Returning `Flow::Stop` cancels before the next token.
    pub async fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_text: impl FnMut(&str) -> Flow,
    ) -> Result<Generation> {
        if prompt.is_empty() {
            return Err(Error::Invalid("the prompt is empty".into()));
        }
        if prompt.len() >= self.model.ctx {
            return Err(Error::ContextFull(format!(
                "the prompt has {} tokens but the context window holds {}",
                prompt.len(),
                self.model.ctx
            )));
        }
        let t0 = now_ms();
        let reused = match self.prefill(prompt).await {
            Ok(r) => r,
            Err(e) => {
                self.cached.clear();
                return Err(e);
            }
        };
        let mut rng = Pcg::new(opts.sampling.seed);
        let mut history: Vec<u32> = prompt.to_vec();
        let mut next = *prompt.last().unwrap();
        let mut out = Generation {
            text: String::new(),
            tokens: Vec::new(),
            stop_reason: StopReason::MaxTokens,
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            prefill_ms: 0.0,
            decode_ms: 0.0,
            step_encode_ms: 0.0,
            step_wait_ms: 0.0,
        };
        self.model.step_times.take();
        let mut utf8 = Utf8Stream::default();
        let mut emitted = 0;
        let mut t_first = None;
        let stops: Vec<String> = opts.stop.iter().filter(|s| !s.is_empty()).cloned().collect();
        // Without penalties a step needs nothing from the CPU, so the next submission goes
        // out before this one's ids are read back (it continues from them on the GPU): the
        // GPU never idles through encoding or readback. Steps submitted past a stop are
        // discarded; they only wrote the KV cache beyond the cached prefix.
        let pipelined = !opts.sampling.has_penalties();
        let step_params = |rng: &mut Pcg, history: &[u32]| {
            (!opts.sampling.is_greedy()).then(|| (opts.sampling.params(rng.next_f32()), opts.sampling.penalties(history)))
        };
        let depth = if pipelined { SUBMITS_IN_FLIGHT } else { 1 };
        // Steps a submission: one at first, for the first token's sake; then, while
        // pipelined, doubling while readbacks come less than submission_ms apart, halving
        // where they come more than twice that apart. Not steps = submission_ms / (interval
        // / steps): each submission's fixed cost (a browser's GPU-process task, 2-3 ms in
        // Chrome on the H100) inflates that pace most for few steps, and held Chrome at 3-6
        // steps where 8 ran faster.
        let mut per_submit = 1;
        let mut last_read: Option<f64> = None;
        // Submissions in order; the front one's first step runs at `pos`.
        let mut in_flight: VecDeque<Pending> = VecDeque::new();
        let mut ahead = 0; // steps in flight
        let mut ids: VecDeque<u32> = VecDeque::new(); // read back, not yet taken
        loop {
            if out.tokens.len() >= opts.max_tokens {
                break;
            }
            if self.cached.len() + 1 > self.model.ctx {
                out.stop_reason = StopReason::ContextFull;
                break;
            }
            let pos = self.cached.len();
            // Invariant: the cache holds everything but `next`, the last token produced.
            if ids.is_empty() {
                // Top up the submissions in flight: each after the first continues from its
                // predecessor's last id on the GPU, and all stay within the token budget
                // and the context.
                let mut submitted = Ok(());
                while submitted.is_ok() && in_flight.len() < depth {
                    let n = per_submit.min(opts.max_tokens - out.tokens.len() - ahead).min(self.model.ctx - pos - ahead);
                    if n == 0 {
                        break;
                    }
                    let sp: Vec<_> = (0..n).filter_map(|_| step_params(&mut rng, &history)).collect();
                    let params: Vec<SampleParams> = sp.iter().map(|(p, _)| *p).collect();
                    let choice = match sp.first() {
                        Some((_, pens)) => Choice::Sample(&params, pens),
                        None => Choice::Greedy(n),
                    };
                    let input = if ahead == 0 { Input::Ids(std::slice::from_ref(&next)) } else { Input::Previous };
                    submitted = self.model.submit_steps(input, pos + ahead, choice).map(|p| {
                        ahead += n;
                        in_flight.push_back(p)
                    });
                }
                let read = match submitted {
                    Ok(()) => self.model.finish_steps(in_flight.pop_front().expect("a submission is in flight")).await,
                    Err(e) => Err(e),
                };
                match read {
                    Ok(r) => {
                        let now = now_ms();
                        if let Some(t) = last_read.filter(|_| pipelined) {
                            let interval = now - t;
                            if interval < self.submission_ms {
                                per_submit = (per_submit * 2).min(MAX_STEPS_PER_SUBMIT);
                            } else if interval > 2.0 * self.submission_ms {
                                per_submit = (per_submit / 2).max(1);
                            }
                        }
                        last_read = Some(now);
                        ahead -= r.len();
                        ids.extend(r);
                    }
                    Err(e) => {
                        self.cached.clear();
                        return Err(e);
                    }
                }
            }
            let id = ids.pop_front().expect("ids were read back");
            self.cached.push(next);
            if t_first.is_none() {
                t_first = Some(now_ms());
            }
            if self.tokenizer.is_eog(id) && !opts.ignore_eos {
                out.stop_reason = StopReason::EndOfText;
                break;
            }
            out.tokens.push(id);
            history.push(id);
            next = id;
            if !self.tokenizer.is_control(id) {
                out.text.push_str(&utf8.push(self.tokenizer.token_bytes(id)));
            }
            if let Some(at) = stops.iter().filter_map(|s| out.text.find(s.as_str())).min() {
                out.text.truncate(at);
                out.stop_reason = StopReason::StopString;
                break;
            }
            // Hold back a tail that could still become a stop string.
            let hold = stops
                .iter()
                .map(|s| (1..s.len()).rev().find(|&n| out.text.ends_with(&s[..n]) && s.is_char_boundary(n)).unwrap_or(0))
                .max()
                .unwrap_or(0);
            let safe = out.text.len() - hold;
            if safe > emitted {
                if on_text(&out.text[emitted..safe]) == Flow::Stop {
                    emitted = safe;
                    out.stop_reason = StopReason::Cancelled;
                    break;
                }
                emitted = safe;
            }
        }
        if out.stop_reason != StopReason::StopString && out.stop_reason != StopReason::Cancelled {
            out.text.push_str(&utf8.finish());
        }
        if out.text.len() > emitted && out.stop_reason != StopReason::Cancelled {
            on_text(&out.text[emitted..]);
        }
        let t_end = now_ms();
        let t_first = t_first.unwrap_or(t_end);
        out.prefill_ms = t_first - t0;
        out.decode_ms = t_end - t_first;
        let steps = self.model.step_times.take();
        out.step_encode_ms = steps.encode_ms / steps.steps.max(1) as f64;
        out.step_wait_ms = steps.wait_ms / steps.steps.max(1) as f64;
        Ok(out)
    }

    /// The prompt for `messages` through the chat template, ready for the assistant's turn.
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.template.tokenize(&self.tokenizer, messages, true)
    }

    /// Replies to `messages` (the whole conversation so far). Stateless for the caller;
    /// the KV cache still serves whatever prefix the previous call shared with this one.
    pub async fn chat(
        &mut self,
        messages: &[Message],
        opts: &GenerateOptions,
        on_text: impl FnMut(&str) -> Flow,
    ) -> Result<Generation> {
        let prompt = self.chat_prompt(messages)?;
        let mut opts = opts.clone();
        opts.stop.extend(self.template.stop_strings());
        self.generate(&prompt, &opts, on_text).await
    }

    /// Teacher-forced scoring: logits for every position of `tokens` (from scratch).
    pub async fn score(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.cached.clear();
        let mut all = Vec::with_capacity(tokens.len() * self.model.cfg.vocab);
        for chunk in tokens.chunks(self.model.logit_rows.min(self.model.max_batch)) {
            let logits = self.model.forward(chunk, self.cached.len(), Logits::All).await?.unwrap();
            all.extend_from_slice(&logits);
            self.cached.extend_from_slice(chunk);
        }
        Ok(all)
    }

    /// Perplexity of `text` by llama-perplexity's method: chunks of `n_ctx` tokens, each
    /// evaluated from scratch with its first token replaced by BOS (when the model adds
    /// one), scoring only the second half of each chunk. `progress` sees each chunk's
    /// running value.
    pub async fn perplexity(&mut self, text: &str, n_ctx: usize, max_chunks: usize, mut progress: impl FnMut(usize, f64)) -> Result<f64> {
        let tokens = self.tokenizer.encode(text, true, true)?;
        let n_chunk = (tokens.len() / n_ctx.max(1)).min(max_chunks);
        if n_ctx < 4 || tokens.len() < 2 * n_ctx {
            return Err(Error::Invalid(format!("need at least {} tokens for a {n_ctx}-token context, the text has {}", 2 * n_ctx, tokens.len())));
        }
        let first = n_ctx / 2;
        let vocab = self.model.cfg.vocab;
        let (mut nll, mut count) = (0f64, 0usize);
        for c in 0..n_chunk {
            let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
            if let (true, Some(b)) = (self.tokenizer.add_bos, self.tokenizer.bos) {
                chunk[0] = b;
            }
            let logits = self.score(&chunk).await?;
            for j in first..n_ctx - 1 {
                nll -= log_softmax(&logits[j * vocab..(j + 1) * vocab], chunk[j + 1] as usize);
                count += 1;
            }
            progress(c + 1, (nll / count as f64).exp());
        }
        Ok((nll / count as f64).exp())
    }
}

/// log p(tok) under softmax(row), in f64 like llama.cpp.
pub fn log_softmax(row: &[f32], tok: usize) -> f64 {
    let mx = row.iter().copied().fold(f32::MIN, f32::max);
    let sum: f64 = row.iter().map(|&v| ((v - mx) as f64).exp()).sum();
    (row[tok] - mx) as f64 - sum.ln()
}

/// A multi-turn conversation whose turns reuse the KV cache of the previous ones.
pub struct Chat {
    pub messages: Vec<Message>,
}

impl Chat {
    pub fn new(system: Option<&str>) -> Chat {
        Chat { messages: system.map(|s| vec![Message::new("system", s)]).unwrap_or_default() }
    }

    pub async fn send(
        &mut self,
        engine: &mut Engine,
        user: &str,
        opts: &GenerateOptions,
        on_text: impl FnMut(&str) -> Flow,
    ) -> Result<Generation> {
        self.messages.push(Message::new("user", user));
        match engine.chat(&self.messages, opts, on_text).await {
            Ok(g) => {
                self.messages.push(Message::new("assistant", g.text.trim()));
                Ok(g)
            }
            Err(e) => {
                self.messages.pop();
                Err(e)
            }
        }
    }
}
