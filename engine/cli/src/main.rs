//! `gloss`: the native front door to the engine.
//!
//!   gloss run --model M (--prompt TEXT | --prompt-file F) [--raw] [--ids] [--max-tokens N] [sampling]
//!   gloss chat --model M [--system TEXT] [sampling]
//!   gloss perplexity --model M --file TEXT [--ctx N] [--chunks N]
//!   gloss bench --model M [--prompt-tokens 128,1024] [--gen-tokens 256] [--out FILE]
//!   gloss score --model M --tokens "1 2 3" [--prompt-len N] [--top-ids "4 5"]  (teacher forcing, JSON)
//!   gloss info --model M
//!
//! Sampling: --temperature T (0 = greedy) --top-k K --top-p P --min-p P --repeat-penalty R
//! --presence-penalty P --frequency-penalty F --seed S. Model options: --ctx N --batch N, --f16 on|off to
//! override the adapter's default kernel precision, and --project-attention on|off the browsers' decode
//! attention that projects its own q/k/v (to compare the paths on one adapter).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::Arc;

use gloss_engine::engine::now_ms;
use gloss_engine::transformer::Logits;
use gloss_engine::{Chat, Engine, Error, FileSource, Flow, GenerateOptions, Gpu, Options, Result, Sampling, Tuning};

const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

struct Args {
    flags: HashMap<String, String>,
}

impl Args {
    fn parse(args: &[String]) -> Result<Args> {
        let mut flags = HashMap::new();
        let mut i = 0;
        while i < args.len() {
            let a = args[i].strip_prefix("--").ok_or_else(|| Error::Invalid(format!("unexpected argument `{}`", args[i])))?;
            let is_switch = matches!(a, "raw" | "ids" | "quiet");
            if is_switch {
                flags.insert(a.to_string(), String::new());
                i += 1;
            } else {
                let v = args.get(i + 1).ok_or_else(|| Error::Invalid(format!("--{a} needs a value")))?;
                flags.insert(a.to_string(), v.clone());
                i += 2;
            }
        }
        Ok(Args { flags })
    }
    fn has(&self, k: &str) -> bool {
        self.flags.contains_key(k)
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.flags.get(k).map(|s| s.as_str())
    }
    fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Result<T> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| Error::Invalid(format!("--{k}: `{v}` is not a valid number"))),
        }
    }
    fn sampling(&self) -> Result<Sampling> {
        let d = Sampling::default();
        Ok(Sampling {
            temperature: self.num("temperature", d.temperature)?,
            top_k: self.num("top-k", d.top_k)?,
            top_p: self.num("top-p", d.top_p)?,
            min_p: self.num("min-p", d.min_p)?,
            repeat_penalty: self.num("repeat-penalty", d.repeat_penalty)?,
            presence_penalty: self.num("presence-penalty", d.presence_penalty)?,
            frequency_penalty: self.num("frequency-penalty", d.frequency_penalty)?,
            penalty_last_n: self.num("penalty-last-n", d.penalty_last_n)?,
            seed: self.num("seed", d.seed)?,
        })
    }
}

async fn load(args: &Args) -> Result<Engine> {
    Ok(load_timed(args).await?.0)
}

/// The model, and the milliseconds `Engine::load` took (file to GPU, pipelines compiled).
async fn load_timed(args: &Args) -> Result<(Engine, f64)> {
    let path = args.get("model").unwrap_or(DEFAULT_MODEL);
    let mut gpu = Gpu::new().await?;
    match args.get("f16") {
        None => {}
        Some("off") => gpu.set_f16(false),
        Some("on") if gpu.summary.shader_f16 => gpu.set_f16(true),
        Some("on") => return Err(Error::Unsupported(format!("--f16 on: {} has no shader-f16", gpu.summary.name))),
        Some(v) => return Err(Error::Invalid(format!("--f16 takes on or off, not `{v}`"))),
    }
    let project = match args.get("project-attention") {
        None => gpu.tuning().project_attention,
        Some("on") => true,
        Some("off") => false,
        Some(v) => return Err(Error::Invalid(format!("--project-attention takes on or off, not `{v}`"))),
    };
    gpu.set_tuning(Tuning { project_attention: project, ..gpu.tuning() });
    let gpu = Arc::new(gpu);
    let mut src = FileSource::open(path)?;
    let opts = Options { ctx: args.num("ctx", 4096)?, max_batch: args.num("batch", 256)? };
    let t0 = now_ms();
    let engine = Engine::load(gpu, &mut src, &opts).await?;
    let load_ms = now_ms() - t0;
    if !args.has("quiet") {
        eprintln!(
            "loaded {} ({}, {} layers, {:.1} MB weights, {}-token context) on {} [{}] in {:.0} ms",
            engine.info.name,
            engine.info.architecture,
            engine.info.n_layer,
            engine.info.weight_bytes as f64 / 1e6,
            engine.info.context,
            engine.info.adapter.name,
            engine.info.adapter.backend,
            load_ms
        );
    }
    Ok((engine, load_ms))
}

fn print_flush(s: &str) -> Flow {
    print!("{s}");
    let _ = std::io::stdout().flush();
    Flow::Continue
}

async fn run(args: &Args) -> Result<()> {
    let mut engine = load(args).await?;
    let text = match (args.get("prompt"), args.get("prompt-file")) {
        (Some(p), _) => p.to_string(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| Error::Io(format!("{f}: {e}")))?,
        (None, None) => return Err(Error::Invalid("give --prompt or --prompt-file".into())),
    };
    let prompt = if args.has("raw") {
        // As llama.cpp tokenizes a raw prompt: BOS only if the model asks, specials parsed.
        engine.tokenizer.encode(&text, true, true)?
    } else {
        let mut msgs = Vec::new();
        if let Some(s) = args.get("system") {
            msgs.push(gloss_engine::Message::new("system", s));
        }
        msgs.push(gloss_engine::Message::new("user", &text));
        engine.template.tokenize(&engine.tokenizer, &msgs, true)?
    };
    let mut opts = GenerateOptions { max_tokens: args.num("max-tokens", 256)?, sampling: args.sampling()?, stop: Vec::new(), ..Default::default() };
    if let Some(s) = args.get("stop") {
        opts.stop.push(s.to_string());
    }
    if !args.has("raw") {
        opts.stop.extend(engine.template.stop_strings());
    }
    let ids = args.has("ids");
    let g = engine.generate(&prompt, &opts, |s| if ids { Flow::Continue } else { print_flush(s) }).await?;
    if ids {
        println!("{}", g.tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" "));
    } else {
        println!();
    }
    eprintln!(
        "[{} prompt tokens, {} generated, stop: {:?}; prefill {:.0} ms, decode {:.1} tok/s]",
        g.prompt_tokens,
        g.tokens.len(),
        g.stop_reason,
        g.prefill_ms,
        g.tokens.len().saturating_sub(1) as f64 / (g.decode_ms / 1000.0).max(1e-9)
    );
    Ok(())
}

async fn chat(args: &Args) -> Result<()> {
    let mut engine = load(args).await?;
    let mut chat = Chat::new(args.get("system"));
    let opts = GenerateOptions { max_tokens: args.num("max-tokens", 512)?, sampling: args.sampling()?, stop: Vec::new(), ..Default::default() };
    let stdin = std::io::stdin();
    loop {
        eprint!("\n> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).map_err(|e| Error::Io(e.to_string()))? == 0 {
            return Ok(());
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let g = chat.send(&mut engine, line, &opts, print_flush).await?;
        eprintln!("\n[{} / {} context tokens used, {:?}]", engine.context_used(), engine.context_size(), g.stop_reason);
    }
}

/// Perplexity by llama-perplexity's method (see `Engine::perplexity`).
async fn perplexity(args: &Args) -> Result<()> {
    let file = args.get("file").ok_or_else(|| Error::Invalid("give --file".into()))?;
    let text = std::fs::read_to_string(file).map_err(|e| Error::Io(format!("{file}: {e}")))?;
    let n_ctx: usize = args.num("ctx", 512)?;
    let mut engine = load(args).await?;
    let ppl = engine.perplexity(&text, n_ctx, args.num("chunks", usize::MAX)?, |c, p| eprint!("[{c}]{p:.4},")).await?;
    eprintln!();
    println!("PPL = {ppl:.4}");
    Ok(())
}

/// Prefill and decode speed on this machine's GPU, with the physical floors beside them.
async fn bench(args: &Args) -> Result<()> {
    let (mut engine, load_ms) = load_timed(args).await?;
    let gen: usize = args.num("gen-tokens", 256)?;
    let prompt_lens: Vec<usize> = args
        .get("prompt-tokens")
        .unwrap_or("128,1024")
        .split(',')
        .map(|s| s.trim().parse().map_err(|_| Error::Invalid(format!("bad --prompt-tokens `{s}`"))))
        .collect::<Result<_>>()?;
    let vocab = engine.model.cfg.vocab as u32;
    let mut rows = Vec::new();
    for &n in &prompt_lens {
        // Deterministic non-special token ids.
        let prompt: Vec<u32> = (0..n as u32).map(|i| 1000 + (i * 7919) % (vocab - 1000)).collect();
        engine.reset();
        // Warm-up compiles pipelines outside the timed region.
        engine.generate(&prompt[..8.min(n)], &GenerateOptions { max_tokens: 2, sampling: Sampling::greedy(), stop: vec![], ..Default::default() }, |_| Flow::Continue).await?;
        engine.reset();
        let t0 = now_ms();
        for (i, chunk) in prompt.chunks(engine.model.max_batch).enumerate() {
            engine.model.forward(chunk, i * engine.model.max_batch, Logits::None).await?;
        }
        engine.model.gpu.read(&engine.model.logits, 0, 4).await?; // wait for the GPU
        let prefill_ms = now_ms() - t0;
        // Decode through the engine's own generation loop (pipelined steps, detokenizing),
        // exactly `gen` tokens like llama-bench; time to first token is the whole prompt's
        // prefill plus the first step.
        engine.reset();
        let opts = GenerateOptions { max_tokens: gen, sampling: Sampling::greedy(), ignore_eos: true, ..Default::default() };
        let g = engine.generate(&prompt, &opts, |_| Flow::Continue).await?;
        let (ttft, decode_ms) = (g.prefill_ms, g.decode_ms * gen as f64 / (g.tokens.len() - 1).max(1) as f64);
        let split = (g.step_encode_ms, g.step_wait_ms);
        // The same decode with the chat's default sampling (temperature, top-k, top-p, min-p),
        // as the side panel runs it.
        engine.reset();
        let sampled = GenerateOptions { sampling: Sampling::default(), ..opts };
        let s = engine.generate(&prompt, &sampled, |_| Flow::Continue).await?;
        let sampled_ms = s.decode_ms * gen as f64 / (s.tokens.len() - 1).max(1) as f64;
        let (pos, next) = (engine.context_used(), *g.tokens.last().unwrap());
        let mut kernels = engine.model.profile(&[next], pos, None).await?.map(|p| format!(",\"step_gpu_ms\":{:.4},\"kernels\":{}", p.step_ms, kernel_profile(&p.ops)));
        if let Some(p) = engine.model.profile(&[next], pos, Some(&Sampling::default().params(0.5))).await? {
            kernels.get_or_insert_default().push_str(&format!(",\"sampled_kernels\":{}", kernel_profile(&p.ops)));
        }
        // And the prompt's last prefill chunk, run again where it was.
        let chunk = n.min(engine.model.max_batch);
        if let Some(p) = engine.model.profile(&prompt[n - chunk..], n - chunk, None).await? {
            kernels.get_or_insert_default().push_str(&format!(",\"prefill_kernels\":{}", kernel_profile(&p.ops)));
        }
        rows.push(serde_json_row(&engine, n, prefill_ms, gen, [decode_ms, sampled_ms], ttft, split, load_ms, kernels));
    }
    let out = format!("[{}]", rows.join(","));
    println!("{out}");
    if let Some(f) = args.get("out") {
        std::fs::write(f, &out).map_err(|e| Error::Io(e.to_string()))?;
    }
    Ok(())
}

/// Per-op GPU times of one step summed by label, slowest first, as a JSON array of
/// `[label, ops, ms]`.
fn kernel_profile(ops: &[(String, f64)]) -> String {
    let mut by_label: Vec<(&str, usize, f64)> = Vec::new();
    for (label, ms) in ops {
        match by_label.iter_mut().find(|e| e.0 == label) {
            Some(e) => {
                e.1 += 1;
                e.2 += ms;
            }
            None => by_label.push((label, 1, *ms)),
        }
    }
    by_label.sort_by(|a, b| b.2.total_cmp(&a.2));
    let items: Vec<String> = by_label.iter().map(|(l, n, ms)| format!("[\"{l}\",{n},{ms:.4}]")).collect();
    format!("[{}]", items.join(","))
}

/// One JSON row; `decode_ms` greedy and sampled; `split` is the mean per greedy decode step
/// of CPU encode+submit and GPU wait (ms);
/// `kernels` the decode step's GPU time and op profiles (greedy, sampled) and a prefill
/// chunk's, where the adapter has timestamp queries.
#[allow(clippy::too_many_arguments)]
fn serde_json_row(e: &Engine, n: usize, prefill_ms: f64, gen: usize, decode_ms: [f64; 2], ttft: f64, split: (f64, f64), load_ms: f64, kernels: Option<String>) -> String {
    let kernels = kernels.unwrap_or_default();
    format!(
        "{{\"model\":\"{}\",\"adapter\":\"{}\",\"prompt_tokens\":{n},\"prefill_tok_s\":{:.1},\"gen_tokens\":{gen},\"batch\":{},\"f16\":{},\"decode_tok_s\":{:.1},\"sampled_decode_tok_s\":{:.1},\"first_token_ms\":{:.2},\"step_encode_ms\":{:.3},\"step_wait_ms\":{:.3},\"bytes_per_token\":{},\"dispatches_per_token\":{},\"weight_bytes\":{},\"kv_bytes\":{},\"gpu_bytes\":{},\"load_ms\":{load_ms:.1}{kernels}}}",
        e.info.name,
        e.info.adapter.name,
        n as f64 / (prefill_ms / 1000.0),
        e.model.max_batch,
        e.model.gpu.f16(),
        gen as f64 / (decode_ms[0] / 1000.0),
        gen as f64 / (decode_ms[1] / 1000.0),
        ttft,
        split.0,
        split.1,
        e.model.bytes_per_token,
        e.model.dispatches_per_token(n + gen / 2),
        e.model.weight_bytes,
        e.model.kv_bytes,
        e.model.gpu_bytes
    )
}

/// Teacher forcing over `--tokens`: each position's argmax, and the first step's logits at
/// `--top-ids` (after `--prompt-len` tokens), as JSON; the browser test compares its wasm
/// run with this.
async fn score(args: &Args) -> Result<()> {
    let parse = |k: &str| -> Result<Vec<u32>> {
        args.get(k)
            .unwrap_or("")
            .split_whitespace()
            .map(|t| t.parse().map_err(|_| Error::Invalid(format!("--{k}: `{t}` is not a token id"))))
            .collect()
    };
    let (ids, top) = (parse("tokens")?, parse("top-ids")?);
    let prompt_len: usize = args.num("prompt-len", ids.len())?;
    if ids.is_empty() || prompt_len == 0 || prompt_len > ids.len() {
        return Err(Error::Invalid("give --tokens, and --prompt-len within them".into()));
    }
    let mut engine = load(args).await?;
    let vocab = engine.model.cfg.vocab;
    let logits = engine.score(&ids).await?;
    let argmax: Vec<String> = logits
        .chunks(vocab)
        .map(|row| row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0.to_string())
        .collect();
    let first = &logits[(prompt_len - 1) * vocab..prompt_len * vocab];
    let top: Vec<String> = top.iter().map(|&t| format!("{}", first[t as usize])).collect();
    println!("{{\"argmax\":[{}],\"first_step\":[{}]}}", argmax.join(","), top.join(","));
    Ok(())
}

async fn info(args: &Args) -> Result<()> {
    let engine = load(args).await?;
    println!("{:#?}", engine.info);
    Ok(())
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first().cloned() else {
        eprintln!("usage: gloss <run|chat|perplexity|bench|score|info> [--model PATH] ...  (see engine/cli/src/main.rs)");
        std::process::exit(2);
    };
    let result = Args::parse(&argv[1..]).and_then(|args| {
        pollster::block_on(async {
            match cmd.as_str() {
                "run" => run(&args).await,
                "chat" => chat(&args).await,
                "perplexity" => perplexity(&args).await,
                "bench" => bench(&args).await,
                "score" => score(&args).await,
                "info" => info(&args).await,
                other => Err(Error::Invalid(format!("unknown command `{other}`"))),
            }
        })
    });
    if let Err(e) = result {
        eprintln!("error [{}]: {e}", e.code());
        std::process::exit(1);
    }
}
