//! The engine's WebAssembly front door: `GlossEngine`, an async JS class over WebGPU.
//!
//! Weights stream from a `Blob` (a Cache Storage response's body, or a file the user picked)
//! slice by slice, so a model never sits whole in the wasm heap. Text streams through a JS
//! callback; the callback returning `true` cancels before the next token. Errors cross as
//! JS `Error`s named `GlossError` with the engine's stable `code`.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use gloss_engine::{ByteSource, Engine, Error, Flow, GenerateOptions, Gpu, Message, Options, Sampling, Tuning};
use js_sys::{Function, Promise, Uint32Array, Uint8Array};
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, JsFuture};
use web_sys::Blob;

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// A JS `Error` with `name = "GlossError"` and a stable `code`.
fn gloss_error(code: &str, message: &str) -> JsValue {
    let err = js_sys::Error::new(message);
    err.set_name("GlossError");
    let _ = js_sys::Reflect::set(&err, &"code".into(), &code.into());
    err.into()
}

fn js_error(e: Error) -> JsValue {
    gloss_error(e.code(), &e.to_string())
}

fn invalid(what: impl std::fmt::Display) -> JsValue {
    js_error(Error::Invalid(what.to_string()))
}

fn to_js<T: serde::Serialize>(v: &T) -> Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(invalid)
}

fn from_js<T: for<'de> Deserialize<'de> + Default>(v: JsValue) -> Result<T, JsValue> {
    if v.is_undefined() || v.is_null() {
        return Ok(T::default());
    }
    serde_wasm_bindgen::from_value(v).map_err(invalid)
}

/// Bytes of a `Blob`, read lazily by slices; reports progress as it goes.
struct BlobSource {
    blob: Blob,
    len: u64,
    read: u64,
    on_progress: Option<Function>,
}

impl ByteSource for BlobSource {
    fn len(&self) -> u64 {
        self.len
    }

    async fn read_at(&mut self, offset: u64, len: usize) -> gloss_engine::Result<Vec<u8>> {
        let end = (offset + len as u64).min(self.len);
        if offset >= end {
            return Ok(Vec::new());
        }
        let io = |e: JsValue| Error::Io(format!("reading the model file failed: {e:?}"));
        let slice = self.blob.slice_with_f64_and_f64(offset as f64, end as f64).map_err(io)?;
        let buf = JsFuture::from(slice.array_buffer()).await.map_err(io)?;
        let bytes = Uint8Array::new(&buf).to_vec();
        self.read = self.read.max(end);
        if let Some(f) = &self.on_progress {
            let _ = f.call2(&JsValue::NULL, &(self.read as f64).into(), &(self.len as f64).into());
        }
        Ok(bytes)
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct LoadOptions {
    /// Context window in tokens; the model's training context caps it.
    context: Option<usize>,
    max_batch: Option<usize>,
    /// Kernel shapes for another kind of adapter ("gpu" or "cpu"; default: this adapter's).
    /// Lets tests put the GPU-shaped kernels through this browser's WGSL compiler on a
    /// software adapter, where the engine would otherwise compile only the CPU shapes.
    tuning: Option<String>,
}

/// One loaded model. Calls are served one at a time; a call made while another runs
/// fails with code `busy` (the offscreen host queues requests, so this only guards bugs).
#[wasm_bindgen]
pub struct GlossEngine {
    inner: Rc<RefCell<Option<Engine>>>,
    info: JsValue,
}

fn busy() -> JsValue {
    gloss_error("busy", "the engine is busy with another request")
}

/// Runs `f` on the engine inside a promise, holding it exclusively until `f` finishes.
fn with_engine<F, Fut>(inner: &Rc<RefCell<Option<Engine>>>, f: F) -> Promise
where
    F: FnOnce(Engine) -> Fut + 'static,
    Fut: std::future::Future<Output = (Engine, Result<JsValue, JsValue>)> + 'static,
{
    let inner = inner.clone();
    future_to_promise(async move {
        let engine = match inner.try_borrow_mut().ok().and_then(|mut slot| slot.take()) {
            Some(e) => e,
            None => return Err(busy()),
        };
        let (engine, result) = f(engine).await;
        *inner.borrow_mut() = Some(engine);
        result
    })
}

/// Calls the JS text callback; a `true` return or a throw stops generation.
fn stream_to(cb: Option<Function>) -> impl FnMut(&str) -> Flow {
    move |text: &str| match &cb {
        Some(f) => match f.call1(&JsValue::NULL, &text.into()) {
            Ok(v) if v.as_bool() == Some(true) => Flow::Stop,
            Ok(_) => Flow::Continue,
            Err(_) => Flow::Stop,
        },
        None => Flow::Continue,
    }
}

#[wasm_bindgen]
impl GlossEngine {
    /// Loads a GGUF model from `blob` onto the GPU. `on_progress(bytesRead, totalBytes)`.
    pub fn load(blob: Blob, options: JsValue, on_progress: Option<Function>) -> Promise {
        future_to_promise(async move {
            let o: LoadOptions = from_js(options)?;
            let mut opts = Options::default();
            opts.ctx = o.context.unwrap_or(opts.ctx);
            opts.max_batch = o.max_batch.unwrap_or(opts.max_batch);
            let mut gpu = Gpu::new().await.map_err(js_error)?;
            match o.tuning.as_deref() {
                None => {}
                Some("gpu") => gpu.set_tuning(Tuning::GPU),
                Some("cpu") => gpu.set_tuning(Tuning::CPU),
                Some(t) => return Err(invalid(format!("tuning `{t}`: use \"gpu\" or \"cpu\""))),
            }
            let gpu = Arc::new(gpu);
            let len = blob.size() as u64;
            let mut src = BlobSource { blob, len, read: 0, on_progress };
            let engine = Engine::load(gpu, &mut src, &opts).await.map_err(js_error)?;
            let info = to_js(&engine.info)?;
            Ok(GlossEngine { inner: Rc::new(RefCell::new(Some(engine))), info }.into())
        })
    }

    /// Model and adapter facts (architecture, context, weight bytes, adapter limits…).
    pub fn info(&self) -> JsValue {
        self.info.clone()
    }

    /// Runs a synchronous call on the engine (fails with `busy` while a promise holds it).
    fn with_ref<R>(&self, f: impl FnOnce(&Engine) -> Result<R, JsValue>) -> Result<R, JsValue> {
        let slot = self.inner.try_borrow().map_err(|_| busy())?;
        f(slot.as_ref().ok_or_else(busy)?)
    }

    /// Tokens in the KV cache from the last call (context accounting).
    #[wasm_bindgen(js_name = contextUsed)]
    pub fn context_used(&self) -> Result<usize, JsValue> {
        let slot = self.inner.try_borrow().map_err(|_| busy())?;
        Ok(slot.as_ref().map(|e| e.context_used()).unwrap_or(0))
    }

    /// Ids of `text`; `parseSpecial` lets control tokens such as `<|im_start|>` through
    /// (only for trusted text).
    pub fn tokenize(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Uint32Array, JsValue> {
        let ids = self.with_ref(|e| e.tokenizer.encode(text, add_bos, parse_special).map_err(js_error))?;
        Ok(Uint32Array::from(&ids[..]))
    }

    /// Prompt length in tokens of `messages` through the chat template.
    #[wasm_bindgen(js_name = countChatTokens)]
    pub fn count_chat_tokens(&self, messages: JsValue) -> Result<usize, JsValue> {
        let messages: Vec<Message> = serde_wasm_bindgen::from_value(messages).map_err(invalid)?;
        self.with_ref(|e| Ok(e.chat_prompt(&messages).map_err(js_error)?.len()))
    }

    /// Replies to a conversation (`[{role, content}]`), streaming text to `on_text`.
    /// Resolves to the `Generation` (text, tokens, stop reason, timings).
    pub fn chat(&self, messages: JsValue, options: JsValue, on_text: Option<Function>) -> Promise {
        let parsed = serde_wasm_bindgen::from_value::<Vec<Message>>(messages)
            .map_err(invalid)
            .and_then(|m| Ok((m, from_js::<GenerateOptions>(options)?)));
        let (messages, opts) = match parsed {
            Ok(p) => p,
            Err(e) => return Promise::reject(&e),
        };
        with_engine(&self.inner, move |mut engine| async move {
            let result = engine.chat(&messages, &opts, stream_to(on_text)).await.map_err(js_error).and_then(|g| to_js(&g));
            (engine, result)
        })
    }

    /// Continues raw prompt ids (no template), streaming text to `on_text`.
    pub fn generate(&self, prompt: Vec<u32>, options: JsValue, on_text: Option<Function>) -> Promise {
        let opts = match from_js::<GenerateOptions>(options) {
            Ok(o) => o,
            Err(e) => return Promise::reject(&e),
        };
        with_engine(&self.inner, move |mut engine| async move {
            let result = engine.generate(&prompt, &opts, stream_to(on_text)).await.map_err(js_error).and_then(|g| to_js(&g));
            (engine, result)
        })
    }

    /// Teacher forcing: the logits of every position of `tokens`, row after row.
    pub fn score(&self, tokens: Vec<u32>) -> Promise {
        with_engine(&self.inner, move |mut engine| async move {
            let result = engine.score(&tokens).await.map_err(js_error).map(|l| js_sys::Float32Array::from(&l[..]).into());
            (engine, result)
        })
    }

    /// GPU times of one decode step of `token` after the cached context, picking greedily
    /// or with the chat's default sampling: `{step_ms, ops: [[label, ms], …]}`, or `null`
    /// where the adapter has no timestamp queries. For benchmarks (Chrome rounds timestamps
    /// to 100 µs unless started with --enable-webgpu-developer-features).
    pub fn profile(&self, token: u32, sampled: bool) -> Promise {
        with_engine(&self.inner, move |engine| async move {
            let sampling = sampled.then(|| Sampling::default().params(0.5));
            let pos = engine.context_used();
            let result = engine.model.profile(&[token], pos, sampling.as_ref()).await.map_err(js_error).and_then(|p| to_js(&p));
            (engine, result)
        })
    }

    /// Forgets the KV cache.
    pub fn reset(&self) -> Result<(), JsValue> {
        let mut slot = self.inner.try_borrow_mut().map_err(|_| busy())?;
        slot.as_mut().ok_or_else(busy)?.reset();
        Ok(())
    }
}
