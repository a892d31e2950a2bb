//! The decoder that runs every supported family on the GPU: weights streamed from GGUF into
//! GPU buffers, a dispatch list built once (bind groups included), and a forward pass that
//! only writes the step's token ids and positions before encoding it.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gguf::{ByteSource, Gguf, TensorInfo};
use crate::gpu::{Gpu, Kernel};
use crate::models::{Activation, Config};
use crate::quant::{self, GgmlType};

/// Bytes of file data read per upload chunk: bounds the loader's peak memory.
const UPLOAD_CHUNK: usize = 8 << 20;
const MATMUL_ROWS: u32 = 64;
const MATMUL_TOKENS: u32 = 32;
const ARGMAX_CHUNK: u32 = 256 * 16;
pub const MAX_PENALTIES: usize = 1024;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Step {
    n_tok: u32,
    pos0: u32,
    _p: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct WParams {
    k: u32,
    rows: u32,
    scale_base: u32,
    out_offset: u32,
    out_stride: u32,
    flags: u32,
    _p: [u32; 2],
}
const ACCUMULATE: u32 = 1;
const BIAS: u32 = 2;
const LAST_TOKEN: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct EParams {
    k: u32,
    row0: u32,
    rows: u32,
    scale_base: u32,
    scale: f32,
    _p: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct NParams {
    n: u32,
    rows_per_tok: u32,
    flags: u32,
    eps: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RParams {
    n_heads: u32,
    head_dim: u32,
    n_rot: u32,
    neox: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AParams {
    n_head: u32,
    n_kv: u32,
    head_dim: u32,
    window: u32,
    scale: f32,
    _p: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct U4 {
    a: u32,
    b: u32,
    _p: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub struct SampleParams {
    pub vocab: u32,
    pub top_k: u32,
    pub n_penalties: u32,
    pub _p0: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub min_p: f32,
    pub u: f32,
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub _p1: f32,
}

/// Rows `row0..row0+rows` of a weight matrix in one GPU buffer (large tensors are split so
/// that no binding exceeds the adapter's maxStorageBufferBindingSize).
pub struct WeightPart {
    pub buffer: wgpu::Buffer,
    pub row0: u32,
    pub rows: u32,
    pub scale_base: u32,
}

pub struct Matrix {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub k: usize,
    pub parts: Vec<WeightPart>,
}

/// Streams a 2-D weight from the file into GPU buffers in the kernels' layout.
pub async fn upload_matrix(gpu: &Gpu, src: &mut impl ByteSource, t: &TensorInfo) -> Result<Matrix> {
    let (rows, k) = t.rows_cols();
    let (rows, k) = (rows as usize, k as usize);
    let ty = t.ty;
    if k % 32 != 0 {
        return Err(Error::Unsupported(format!("tensor `{}` has row length {k}, not a multiple of 32", t.name)));
    }
    let blocks_per_row = k / ty.block_size();
    let row_bytes = blocks_per_row * ty.block_bytes();
    // Whole rows per part, an even block count so separated f16 scales pack into words.
    let mut rows_per_part = rows;
    while (ty.gpu_words(rows_per_part * blocks_per_row) * 4) as u64 > gpu.max_binding() {
        rows_per_part = rows_per_part.div_ceil(2);
    }
    if rows_per_part == 0 || (ty.gpu_words(blocks_per_row) * 4) as u64 > gpu.max_binding() {
        return Err(Error::Limits(format!("one row of `{}` exceeds maxStorageBufferBindingSize", t.name)));
    }
    if rows_per_part < rows && rows_per_part % 2 == 1 {
        rows_per_part += 1;
    }
    let mut chunk_rows = (UPLOAD_CHUNK / row_bytes).max(1);
    if chunk_rows % 2 == 1 && chunk_rows > 1 {
        chunk_rows -= 1;
    }
    let mut parts = Vec::new();
    let mut row0 = 0;
    while row0 < rows {
        let n = rows_per_part.min(rows - row0);
        let n_blocks = n * blocks_per_row;
        let bodies_words = n_blocks * ty.body_words();
        let buffer = gpu.storage(&t.name, (ty.gpu_words(n_blocks) * 4) as u64)?;
        let mut r = 0;
        while r < n {
            let m = chunk_rows.min(n - r);
            let offset = t.offset + ((row0 + r) * row_bytes) as u64;
            let bytes = src.read_at(offset, m * row_bytes).await?;
            if bytes.len() != m * row_bytes {
                return Err(Error::Corrupt(format!("file ended inside tensor `{}`", t.name)));
            }
            let (mut bodies, mut scales) = (Vec::new(), Vec::new());
            quant::repack(ty, &bytes, &mut bodies, &mut scales);
            let first_block = r * blocks_per_row;
            gpu.queue.write_buffer(&buffer, (first_block * ty.body_words() * 4) as u64, bytemuck::cast_slice(&bodies));
            if !scales.is_empty() {
                if scales.len() % 2 == 1 {
                    scales.push(0);
                }
                gpu.queue.write_buffer(
                    &buffer,
                    ((bodies_words + first_block / 2) * 4) as u64,
                    bytemuck::cast_slice(&scales),
                );
            }
            r += m;
        }
        // Flush staged uploads so native staging memory stays at one chunk's worth.
        gpu.queue.submit([]);
        parts.push(WeightPart { buffer, row0: row0 as u32, rows: n as u32, scale_base: bodies_words as u32 });
        row0 += n;
    }
    Ok(Matrix { name: t.name.clone(), ty, rows, k, parts })
}

/// Reads a small tensor (norm weights, biases, rope factors) as f32 on the CPU.
pub async fn read_f32(src: &mut impl ByteSource, t: &TensorInfo) -> Result<Vec<f32>> {
    let bytes = src.read_at(t.offset, t.size as usize).await?;
    if bytes.len() as u64 != t.size {
        return Err(Error::Corrupt(format!("file ended inside tensor `{}`", t.name)));
    }
    let mut out = Vec::with_capacity(t.n_elements() as usize);
    quant::dequantize(t.ty, &bytes, &mut out);
    Ok(out)
}

#[derive(Clone, Copy)]
enum Grid {
    /// x workgroups, y = number of tokens.
    PerToken(u32),
    /// One workgroup per row, `n` rows per token (wrapped into y past 65535).
    Rows(u32),
    /// `n` elements per token, 256 per workgroup.
    Elems(u32),
    /// A linear layer: matvec for one token, tiled matmul for more.
    Linear { rows: u32, last_only: bool },
    Fixed(u32),
}

struct Op {
    kernel: Kernel,
    /// The matmul variant for Grid::Linear.
    alt: Option<Kernel>,
    bind_group: wgpu::BindGroup,
    grid: Grid,
}

struct Activations {
    x: wgpu::Buffer,
    xn: wgpu::Buffer,
    tmp: wgpu::Buffer,
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    att: wgpu::Buffer,
    gate: wgpu::Buffer,
    up: wgpu::Buffer,
}

/// What a forward pass returns.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Logits {
    /// Nothing (prefill of a prompt prefix).
    None,
    /// The last token's logits stay on the GPU for sampling.
    Last,
    /// Every token's logits (scoring, perplexity); at most `logit_rows` tokens.
    All,
}

pub struct Options {
    /// Context window in tokens (KV cache size).
    pub ctx: usize,
    /// Largest number of tokens per forward pass (prefill chunk).
    pub max_batch: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { ctx: 4096, max_batch: 256 }
    }
}

pub struct Transformer {
    pub cfg: Config,
    pub gpu: Arc<Gpu>,
    pub ctx: usize,
    pub max_batch: usize,
    /// Tokens whose logits one `Logits::All` pass can return.
    pub logit_rows: usize,
    body: Vec<Op>,
    head_last: Vec<Op>,
    head_all: Vec<Op>,
    greedy: Vec<Op>,
    sample: Vec<Op>,
    step: wgpu::Buffer,
    ids: wgpu::Buffer,
    pub logits: wgpu::Buffer,
    sample_params: wgpu::Buffer,
    penalties: wgpu::Buffer,
    result: wgpu::Buffer,
    result_staging: wgpu::Buffer,
    /// Bytes of weights on the GPU, and of KV cache.
    pub weight_bytes: u64,
    pub kv_bytes: u64,
    /// Bytes of weights read from memory per decoded token (the bandwidth floor).
    pub bytes_per_token: u64,
    /// CPU time spent encoding and submitting the last sampled step, and time then spent
    /// waiting for its id (benchmarks use these to tell CPU overhead from GPU work).
    pub last_step_ms: std::cell::Cell<(f64, f64)>,
}

struct Builder<'a> {
    gpu: &'a Gpu,
    step: &'a wgpu::Buffer,
    dummy: &'a wgpu::Buffer,
    ops: Vec<Op>,
}

impl Builder<'_> {
    fn linear(&mut self, m: &Matrix, x: &wgpu::Buffer, y: &wgpu::Buffer, bias: Option<&wgpu::Buffer>, flags: u32) {
        for p in &m.parts {
            let flags = flags | if bias.is_some() { BIAS } else { 0 };
            let params = self.gpu.uniform(
                "wparams",
                &WParams {
                    k: m.k as u32,
                    rows: p.rows,
                    scale_base: p.scale_base,
                    out_offset: p.row0,
                    out_stride: m.rows as u32,
                    flags,
                    _p: [0; 2],
                },
            );
            let kernel = Kernel::MatVec(m.ty);
            let bg = self.gpu.bind_group(kernel, &[&p.buffer, x, y, bias.unwrap_or(self.dummy), &params, self.step]);
            self.ops.push(Op {
                kernel,
                alt: Some(Kernel::MatMul(m.ty)),
                bind_group: bg,
                grid: Grid::Linear { rows: p.rows, last_only: flags & LAST_TOKEN != 0 },
            });
        }
    }

    fn norm(&mut self, x: Option<&wgpu::Buffer>, w: &wgpu::Buffer, y: &wgpu::Buffer, n: usize, rows_per_tok: usize, eps: f32, accumulate: bool) {
        let flags = (accumulate as u32) | if x.is_none() { 2 } else { 0 };
        let params = self.gpu.uniform("nparams", &NParams { n: n as u32, rows_per_tok: rows_per_tok as u32, flags, eps });
        let bg = self.gpu.bind_group(Kernel::RmsNorm, &[x.unwrap_or(self.dummy), w, y, &params, self.step]);
        self.ops.push(Op { kernel: Kernel::RmsNorm, alt: None, bind_group: bg, grid: Grid::Rows(rows_per_tok as u32) });
    }

    fn op(&mut self, kernel: Kernel, buffers: &[&wgpu::Buffer], grid: Grid) {
        let bg = self.gpu.bind_group(kernel, buffers);
        self.ops.push(Op { kernel, alt: None, bind_group: bg, grid });
    }
}

/// llama.cpp's per-pair rotation frequencies: base^(-2i/n_rot) by repeated multiplication,
/// times the linear scale, divided by the optional per-dimension factors.
fn rope_inv_freq(cfg: &Config, base: f32, factors: Option<&[f32]>) -> Vec<f32> {
    let theta_scale = base.powf(-2.0 / cfg.n_rot as f32);
    let mut theta = 1.0f32;
    (0..cfg.n_rot / 2)
        .map(|i| {
            let f = cfg.rope_scale * theta / factors.map_or(1.0, |ff| ff[i]);
            theta *= theta_scale;
            f
        })
        .collect()
}

impl Transformer {
    pub async fn load(gpu: Arc<Gpu>, gguf: &Gguf, src: &mut impl ByteSource, cfg: Config, opts: &Options) -> Result<Transformer> {
        let ctx = opts.ctx.max(1);
        let max_batch = opts.max_batch.clamp(1, ctx);
        let g = &*gpu;
        let tensor = |name: &str| -> Result<&TensorInfo> {
            gguf.tensor(name).ok_or_else(|| Error::Corrupt(format!("tensor `{name}` is missing")))
        };
        let check_shape = |t: &TensorInfo, want: &[usize]| -> Result<()> {
            let got: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            if got != want {
                return Err(Error::Corrupt(format!(
                    "tensor `{}` has shape {got:?} but the metadata implies {want:?}",
                    t.name
                )));
            }
            Ok(())
        };
        let mut weight_bytes = 0u64;
        let mut bytes_per_token = 0u64;
        let mut matrix = async |name: &str, rows: usize, k: usize, src: &mut _| -> Result<Matrix> {
            let t = tensor(name)?;
            check_shape(t, &[k, rows])?;
            let m = upload_matrix(g, src, t).await?;
            weight_bytes += t.size;
            Ok(m)
        };
        let (e, qd, kvd) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim());

        let embd = matrix("token_embd.weight", cfg.vocab, e, src).await?;
        let output = match gguf.tensor("output.weight") {
            Some(_) => Some(matrix("output.weight", cfg.vocab, e, src).await?),
            None => None,
        };
        // Decode reads every layer weight and the output head once per token.
        bytes_per_token += tensor(if output.is_some() { "output.weight" } else { "token_embd.weight" })?.size;

        let vector = async |name: &str, n: usize, src: &mut _| -> Result<wgpu::Buffer> {
            let t = tensor(name)?;
            check_shape(t, &[n])?;
            let v = read_f32(src, t).await?;
            g.storage_init(name, bytemuck::cast_slice(&v))
        };

        let f32s = |n: usize| (n * 4) as u64;
        let act = Activations {
            x: g.storage("x", f32s(max_batch * e))?,
            xn: g.storage("xn", f32s(max_batch * e))?,
            tmp: g.storage("tmp", f32s(max_batch * e))?,
            q: g.storage("q", f32s(max_batch * qd))?,
            k: g.storage("k", f32s(max_batch * kvd))?,
            v: g.storage("v", f32s(max_batch * kvd))?,
            att: g.storage("att", f32s(max_batch * qd))?,
            gate: g.storage("gate", f32s(max_batch * cfg.n_ff))?,
            up: g.storage("up", f32s(max_batch * cfg.n_ff))?,
        };
        let step = g.uniform("step", &Step { n_tok: 0, pos0: 0, _p: [0; 2] });
        let ids = g.storage("ids", (max_batch * 4) as u64)?;
        let dummy = g.storage("dummy", 16)?;
        let row_bytes = f32s(cfg.vocab);
        let logit_rows = ((g.max_binding().min(256 << 20) / row_bytes) as usize).clamp(1, max_batch);
        let logits = g.storage("logits", row_bytes * logit_rows as u64)?;

        let rope_factors = match gguf.tensor("rope_freqs.weight") {
            Some(t) => {
                check_shape(t, &[cfg.n_rot / 2])?;
                Some(read_f32(src, t).await?)
            }
            None => None,
        };
        let inv_freq = g.storage_init("rope", bytemuck::cast_slice(&rope_inv_freq(&cfg, cfg.rope_base, rope_factors.as_deref())))?;
        let inv_freq_swa = g.storage_init("rope_swa", bytemuck::cast_slice(&rope_inv_freq(&cfg, cfg.rope_base_swa, None)))?;

        let mut b = Builder { gpu: g, step: &step, dummy: &dummy, ops: Vec::new() };
        for p in &embd.parts {
            let params = g.uniform(
                "eparams",
                &EParams { k: e as u32, row0: p.row0, rows: p.rows, scale_base: p.scale_base, scale: cfg.embed_scale, _p: [0; 3] },
            );
            b.op(Kernel::Embed(embd.ty), &[&p.buffer, &ids, &act.x, &params, &step], Grid::PerToken((e as u32 / 4).div_ceil(64)));
        }

        let kv_words = (ctx * kvd / 2 * 4) as u64;
        let mut kv_bytes = 0;
        let rope_params = |n_heads: usize| {
            g.uniform(
                "rparams",
                &RParams { n_heads: n_heads as u32, head_dim: cfg.head_dim as u32, n_rot: cfg.n_rot as u32, neox: cfg.rope_neox as u32 },
            )
        };
        let (rope_q, rope_k) = (rope_params(cfg.n_head), rope_params(cfg.n_kv_head));
        let kv_params = g.uniform("kparams", &U4 { a: kvd as u32, b: 0, _p: [0; 2] });
        let glu_params = g.uniform(
            "gparams",
            &U4 { a: cfg.n_ff as u32, b: (cfg.act == Activation::GeluTanh) as u32, _p: [0; 2] },
        );
        if cfg.head_dim > 256 || cfg.head_dim % 2 == 1 {
            return Err(Error::Unsupported(format!("head dimension {} (attention supports even sizes up to 256)", cfg.head_dim)));
        }
        if cfg.n_rot > cfg.head_dim || cfg.n_rot % 2 == 1 {
            return Err(Error::Corrupt(format!("rope dimension {} does not fit head dimension {}", cfg.n_rot, cfg.head_dim)));
        }

        for l in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{l}.{s}");
            let attn_norm = vector(&n("attn_norm.weight"), e, src).await?;
            let wq = matrix(&n("attn_q.weight"), qd, e, src).await?;
            let wk = matrix(&n("attn_k.weight"), kvd, e, src).await?;
            let wv = matrix(&n("attn_v.weight"), kvd, e, src).await?;
            let wo = matrix(&n("attn_output.weight"), e, qd, src).await?;
            let ffn_norm = vector(&n("ffn_norm.weight"), e, src).await?;
            let wg = matrix(&n("ffn_gate.weight"), cfg.n_ff, e, src).await?;
            let wu = matrix(&n("ffn_up.weight"), cfg.n_ff, e, src).await?;
            let wd = matrix(&n("ffn_down.weight"), e, cfg.n_ff, src).await?;
            for w in [&wq, &wk, &wv, &wo, &wg, &wu, &wd] {
                bytes_per_token += tensor(&w.name)?.size;
            }
            let (bq, bk, bv) = if cfg.qkv_bias {
                (
                    Some(vector(&n("attn_q.bias"), qd, src).await?),
                    Some(vector(&n("attn_k.bias"), kvd, src).await?),
                    Some(vector(&n("attn_v.bias"), kvd, src).await?),
                )
            } else {
                (None, None, None)
            };
            let qk_norms = if cfg.qk_norm {
                Some((vector(&n("attn_q_norm.weight"), cfg.head_dim, src).await?, vector(&n("attn_k_norm.weight"), cfg.head_dim, src).await?))
            } else {
                None
            };
            let post = if cfg.post_norms {
                Some((vector(&n("post_attention_norm.weight"), e, src).await?, vector(&n("post_ffw_norm.weight"), e, src).await?))
            } else {
                None
            };
            let k_cache = g.storage("k_cache", kv_words)?;
            let v_cache = g.storage("v_cache", kv_words)?;
            kv_bytes += 2 * kv_words;

            b.norm(Some(&act.x), &attn_norm, &act.xn, e, 1, cfg.rms_eps, false);
            b.linear(&wq, &act.xn, &act.q, bq.as_ref(), 0);
            b.linear(&wk, &act.xn, &act.k, bk.as_ref(), 0);
            b.linear(&wv, &act.xn, &act.v, bv.as_ref(), 0);
            if let Some((qn, kn)) = &qk_norms {
                b.norm(None, qn, &act.q, cfg.head_dim, cfg.n_head, cfg.rms_eps, false);
                b.norm(None, kn, &act.k, cfg.head_dim, cfg.n_kv_head, cfg.rms_eps, false);
            }
            let freqs = if cfg.swa_layers[l] { &inv_freq_swa } else { &inv_freq };
            let rope_x = |heads: usize| Grid::PerToken(((heads * cfg.n_rot / 2) as u32).div_ceil(64));
            b.op(Kernel::Rope, &[&act.q, freqs, &rope_q, &step], rope_x(cfg.n_head));
            b.op(Kernel::Rope, &[&act.k, freqs, &rope_k, &step], rope_x(cfg.n_kv_head));
            b.op(Kernel::KvStore, &[&act.k, &act.v, &k_cache, &v_cache, &kv_params, &step], Grid::PerToken((kvd as u32 / 2).div_ceil(64)));
            let window = if cfg.swa_layers[l] { cfg.window as u32 } else { 0 };
            let aparams = g.uniform(
                "aparams",
                &AParams {
                    n_head: cfg.n_head as u32,
                    n_kv: cfg.n_kv_head as u32,
                    head_dim: cfg.head_dim as u32,
                    window,
                    scale: cfg.attn_scale,
                    _p: [0; 3],
                },
            );
            b.op(Kernel::Attention, &[&act.q, &k_cache, &v_cache, &act.att, &aparams, &step], Grid::PerToken(cfg.n_head as u32));
            match &post {
                Some((post_attn, _)) => {
                    b.linear(&wo, &act.att, &act.tmp, None, 0);
                    b.norm(Some(&act.tmp), post_attn, &act.x, e, 1, cfg.rms_eps, true);
                }
                None => b.linear(&wo, &act.att, &act.x, None, ACCUMULATE),
            }
            b.norm(Some(&act.x), &ffn_norm, &act.xn, e, 1, cfg.rms_eps, false);
            b.linear(&wg, &act.xn, &act.gate, None, 0);
            b.linear(&wu, &act.xn, &act.up, None, 0);
            b.op(Kernel::Glu, &[&act.gate, &act.up, &glu_params, &step], Grid::Elems(cfg.n_ff as u32));
            match &post {
                Some((_, post_ffw)) => {
                    b.linear(&wd, &act.gate, &act.tmp, None, 0);
                    b.norm(Some(&act.tmp), post_ffw, &act.x, e, 1, cfg.rms_eps, true);
                }
                None => b.linear(&wd, &act.gate, &act.x, None, ACCUMULATE),
            }
        }
        let out_norm = vector("output_norm.weight", e, src).await?;
        b.norm(Some(&act.x), &out_norm, &act.xn, e, 1, cfg.rms_eps, false);
        let body = std::mem::take(&mut b.ops);
        let head = output.as_ref().unwrap_or(&embd);
        b.linear(head, &act.xn, &logits, None, LAST_TOKEN);
        let head_last = std::mem::take(&mut b.ops);
        b.linear(head, &act.xn, &logits, None, 0);
        let head_all = std::mem::take(&mut b.ops);

        let sample_params = g.uniform("sparams", &SampleParams::default());
        let partials = g.storage("partials", (cfg.vocab as u64).div_ceil(ARGMAX_CHUNK as u64) * 8)?;
        let result = g.storage("result", 16)?;
        let penalties = g.storage("penalties", (MAX_PENALTIES * 8) as u64)?;
        let sbind = [&logits, &partials, &result, &penalties, &sample_params];
        b.op(Kernel::ArgmaxPartial, &sbind, Grid::Fixed((cfg.vocab as u32).div_ceil(ARGMAX_CHUNK)));
        b.op(Kernel::ArgmaxFinal, &sbind, Grid::Fixed(1));
        let greedy = std::mem::take(&mut b.ops);
        b.op(Kernel::Sample, &sbind, Grid::Fixed(1));
        let sample = std::mem::take(&mut b.ops);
        let result_staging = g.readback_buffer("result", 4);
        g.queue.submit([]);
        gpu.check()?;
        Ok(Transformer {
            cfg,
            gpu: gpu.clone(),
            ctx,
            max_batch,
            logit_rows,
            body,
            head_last,
            head_all,
            greedy,
            sample,
            step,
            ids,
            logits,
            sample_params,
            penalties,
            result,
            result_staging,
            weight_bytes,
            kv_bytes,
            bytes_per_token,
            last_step_ms: Default::default(),
        })
    }

    /// Dispatches per decoded token: the latency floor is this times the per-dispatch cost.
    pub fn dispatches_per_token(&self) -> usize {
        self.body.len() + self.head_last.len() + self.greedy.len()
    }

    fn encode(&self, pass: &mut wgpu::ComputePass, ops: &[Op], n_tok: u32) {
        encode(&self.gpu, pass, ops, n_tok)
    }

    fn check_batch(&self, tokens: &[u32], pos0: usize, logits: Logits) -> Result<()> {
        if tokens.is_empty() || tokens.len() > self.max_batch {
            return Err(Error::Invalid(format!("a forward pass takes 1..={} tokens, got {}", self.max_batch, tokens.len())));
        }
        if logits == Logits::All && tokens.len() > self.logit_rows {
            return Err(Error::Invalid(format!("at most {} tokens can return all logits", self.logit_rows)));
        }
        if pos0 + tokens.len() > self.ctx {
            return Err(Error::ContextFull(format!(
                "{} tokens at position {pos0} exceed the {}-token context window",
                tokens.len(),
                self.ctx
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab) {
            return Err(Error::Invalid(format!("token id {bad} is outside the vocabulary ({})", self.cfg.vocab)));
        }
        Ok(())
    }

    /// Runs `tokens` at positions `pos0..`, appending them to the KV cache. With
    /// `Logits::All`, returns their logits (row-major, one row of `vocab` per token).
    pub async fn forward(&self, tokens: &[u32], pos0: usize, logits: Logits) -> Result<Option<Vec<f32>>> {
        self.check_batch(tokens, pos0, logits)?;
        self.gpu.check()?;
        let n = tokens.len() as u32;
        self.write_step(tokens, pos0);
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            self.encode(&mut pass, &self.body, n);
            match logits {
                Logits::None => {}
                Logits::Last => self.encode(&mut pass, &self.head_last, n),
                Logits::All => self.encode(&mut pass, &self.head_all, n),
            }
        }
        self.gpu.queue.submit([enc.finish()]);
        if logits != Logits::All {
            return Ok(None);
        }
        let bytes = self.gpu.read(&self.logits, 0, (tokens.len() * self.cfg.vocab * 4) as u64).await?;
        Ok(Some(bytemuck::cast_slice(&bytes).to_vec()))
    }

    fn write_step(&self, tokens: &[u32], pos0: usize) {
        self.gpu.queue.write_buffer(&self.ids, 0, bytemuck::cast_slice(tokens));
        self.gpu.queue.write_buffer(&self.step, 0, bytemuck::bytes_of(&Step { n_tok: tokens.len() as u32, pos0: pos0 as u32, _p: [0; 2] }));
    }

    /// Runs `tokens` and picks the next token on the GPU in the same submission; only the
    /// chosen id comes back. `params == None` means greedy.
    pub async fn forward_and_sample(
        &self,
        tokens: &[u32],
        pos0: usize,
        params: Option<(&SampleParams, &[[u32; 2]])>,
    ) -> Result<u32> {
        self.check_batch(tokens, pos0, Logits::Last)?;
        self.gpu.check()?;
        self.write_step(tokens, pos0);
        let vocab = self.cfg.vocab as u32;
        match params {
            Some((p, penalties)) => {
                let pens = &penalties[..penalties.len().min(MAX_PENALTIES)];
                let p = SampleParams { vocab, n_penalties: pens.len() as u32, ..*p };
                self.gpu.queue.write_buffer(&self.sample_params, 0, bytemuck::bytes_of(&p));
                if !pens.is_empty() {
                    self.gpu.queue.write_buffer(&self.penalties, 0, bytemuck::cast_slice(pens));
                }
            }
            None => {
                let p = SampleParams { vocab, ..Default::default() };
                self.gpu.queue.write_buffer(&self.sample_params, 0, bytemuck::bytes_of(&p));
            }
        }
        let n = tokens.len() as u32;
        let t0 = crate::engine::now_ms();
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            self.encode(&mut pass, &self.body, n);
            self.encode(&mut pass, &self.head_last, n);
            self.encode(&mut pass, if params.is_some() { &self.sample } else { &self.greedy }, n);
        }
        enc.copy_buffer_to_buffer(&self.result, 0, &self.result_staging, 0, 4);
        self.gpu.queue.submit([enc.finish()]);
        let t1 = crate::engine::now_ms();
        let bytes = self.gpu.read_mapped(&self.result_staging, 4).await?;
        self.last_step_ms.set((t1 - t0, crate::engine::now_ms() - t1));
        let id = u32::from_le_bytes(bytes[..4].try_into().unwrap());
        if id >= vocab {
            return Err(Error::Gpu(format!("sampler returned token {id} outside the vocabulary (non-finite logits?)")));
        }
        Ok(id)
    }
}

fn encode(gpu: &Gpu, pass: &mut wgpu::ComputePass, ops: &[Op], n_tok: u32) {
    for op in ops {
            let (kernel, [x, y]) = match op.grid {
                Grid::PerToken(x) => (op.kernel, [x, n_tok]),
                Grid::Rows(n) => {
                    let rows = n * n_tok;
                    (op.kernel, [rows.min(65535), rows.div_ceil(65535)])
                }
                Grid::Elems(n) => {
                    let wgs = (n * n_tok).div_ceil(256);
                    (op.kernel, [wgs.min(65535), wgs.div_ceil(65535)])
                }
                Grid::Linear { rows, last_only } => {
                    if last_only || n_tok == 1 {
                        (op.kernel, [rows.div_ceil(gpu.matvec_rows()), if last_only { 1 } else { n_tok }])
                    } else {
                        (op.alt.unwrap(), [rows.div_ceil(MATMUL_ROWS), n_tok.div_ceil(MATMUL_TOKENS)])
                    }
                }
                Grid::Fixed(x) => (op.kernel, [x, 1]),
            };
            pass.set_pipeline(&gpu.pipeline(kernel).pipeline);
            pass.set_bind_group(0, &op.bind_group, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
}

/// Encodes `ops` in one compute pass and submits them (the stand-alone kernel runners).
fn submit_ops(gpu: &Gpu, ops: &[Op], n_tok: u32) {
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        encode(gpu, &mut pass, ops, n_tok);
    }
    gpu.queue.submit([enc.finish()]);
}

/// Applies one weight matrix to `n_tok` rows of `x` through the same kernels the model uses
/// (matvec for one token, matmul for more). For kernel tests and diagnostics.
pub async fn apply_linear(gpu: &Gpu, m: &Matrix, x: &[f32], n_tok: usize) -> Result<Vec<f32>> {
    let step = gpu.uniform("step", &Step { n_tok: n_tok as u32, pos0: 0, _p: [0; 2] });
    let dummy = gpu.storage("dummy", 16)?;
    let xb = gpu.storage_init("x", bytemuck::cast_slice(x))?;
    let y = gpu.storage("y", (n_tok * m.rows * 4) as u64)?;
    let mut b = Builder { gpu, step: &step, dummy: &dummy, ops: Vec::new() };
    b.linear(m, &xb, &y, None, 0);
    submit_ops(gpu, &b.ops, n_tok as u32);
    let bytes = gpu.read(&y, 0, (n_tok * m.rows * 4) as u64).await?;
    Ok(bytemuck::cast_slice(&bytes).to_vec())
}

/// Runs the GPU sampler on `logits` (one row); for tests against `sampling::sample_reference`.
pub async fn apply_sampler(gpu: &Gpu, logits: &[f32], p: &SampleParams, penalties: &[[u32; 2]]) -> Result<u32> {
    let lb = gpu.storage_init("logits", bytemuck::cast_slice(logits))?;
    let partials = gpu.storage("partials", (logits.len() as u64).div_ceil(ARGMAX_CHUNK as u64) * 8)?;
    let result = gpu.storage("result", 16)?;
    let pens = gpu.storage("penalties", (MAX_PENALTIES * 8) as u64)?;
    if !penalties.is_empty() {
        gpu.queue.write_buffer(&pens, 0, bytemuck::cast_slice(penalties));
    }
    let params = gpu.uniform("sparams", &SampleParams { vocab: logits.len() as u32, n_penalties: penalties.len() as u32, ..*p });
    let dummy = gpu.storage("dummy", 16)?;
    let mut b = Builder { gpu, step: &dummy, dummy: &dummy, ops: Vec::new() };
    b.op(Kernel::Sample, &[&lb, &partials, &result, &pens, &params], Grid::Fixed(1));
    submit_ops(gpu, &b.ops, 1);
    let bytes = gpu.read(&result, 0, 4).await?;
    Ok(u32::from_le_bytes(bytes[..4].try_into().unwrap()))
}
