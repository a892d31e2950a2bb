//! The decoder that runs every supported family on the GPU: weights streamed from GGUF into
//! GPU buffers, a dispatch list built once (bind groups included), and a forward pass that
//! only writes the step's token ids and positions before encoding it.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gguf::{ByteSource, Gguf, TensorInfo};
use crate::gpu::{attention_keys_per_tile, Gpu, Kernel, MatVecInput, MERGE_FLOATS};
use crate::models::{Activation, Config};
use crate::quant::{self, GgmlType};

/// Bytes of file data read per upload chunk: bounds the loader's peak memory.
const UPLOAD_CHUNK: usize = 8 << 20;
const MATMUL_TOKENS: u32 = 64;
/// Queries (heads x tokens) per prefill attention workgroup without tiles: they share each
/// key and value read. At most 8: attention.wgsl's `red` holds 8 queries' partial dot
/// products.
const PREFILL_QUERIES: usize = 8;
/// Queries per workgroup of the tiled prefill attention (attention_prefill.wgsl's BQ).
const TILE_QUERIES: usize = 64;
/// Rows (one per invocation) and tokens per invocation of matmul.wgsl's `rows` (its
/// workgroup size and ROW_TOKENS).
const ROW_WORKGROUP: u32 = 64;
const ROW_TOKENS: u32 = 8;
const ARGMAX_CHUNK: u32 = 256 * 16;
/// Logits per chunk of sample.wgsl's top-k candidates (its CAND_CHUNK).
const CAND_CHUNK: u32 = 256 * 4;
/// Prefill's attention splits the keys into runs of at least this many positions (decode's:
/// the length of its kernel's tile, `Transformer::decode_split_keys`).
const MIN_KEYS_PER_SPLIT: usize = 32;
/// Head dimensions per combine workgroup (attention.wgsl's CDIMS).
const COMBINE_DIMS: usize = 64;
/// Most splits one token's attention is combined from (attention.wgsl's MAX_SPLITS).
const MAX_SPLITS: usize = 256;
pub const MAX_PENALTIES: usize = 1024;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Step {
    n_tok: u32,
    pos0: u32,
    /// Attention's key splits per token and positions per split (attention.wgsl).
    splits: u32,
    chunk: u32,
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
    eps: f32,
    /// Columns per split of a split matmul (matmul.wgsl), k where it is not split; a MERGE
    /// matvec's head dimension.
    split_k: u32,
}

/// split_sum.wgsl's parameters.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SParams {
    rows: u32,
    splits: u32,
    out_offset: u32,
    out_stride: u32,
    flags: u32,
    _p: [u32; 3],
}
const ACCUMULATE: u32 = 1;
const BIAS: u32 = 2;
const LAST_TOKEN: u32 = 4;
const NORM: u32 = 8;
/// Gate and up stacked; the activation goes in bits 8.. of the flags.
const GLU: u32 = 16;
/// The most key splits per head a MERGE matvec merges (beyond, the combine pass runs): the
/// merge reads every split's values in every workgroup, which pays only for short contexts
/// (on the H100, 17-32 splits merged: Gemma +1%, SmolLM2 level with the combine pass; up to
/// 64: Gemma after 1536 tokens -5%).
const MERGE_MAX_SPLITS: usize = 32;
/// Decode attention projects its own q/k/v (attention_projected.wgsl) where a workgroup's
/// q rows, head_dim of them over its 256 threads, take at most this many groups of 4 columns
/// a thread (SmolLM2: 36). Past that the projection would outlast the dispatch it saves.
const PROJECTION_GROUPS: usize = 64;

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
    flags: u32,
    eps: f32,
    /// Slabs the input is summed from (flag SLABS).
    splits: u32,
}
/// rmsnorm.wgsl's flags.
const NORM_ADD: u32 = 1;
const NORM_NEXT: u32 = 2;
const NORM_SLABS: u32 = 4;
const NORM_RAW: u32 = 8;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct PParams {
    n_head: u32,
    n_kv: u32,
    head_dim: u32,
    n_rot: u32,
    stride: u32,
    flags: u32,
    eps: f32,
    /// Slabs of the q/k/v matmul the inputs are summed from; 0: read them from qkv.
    splits: u32,
}
const ROPE_BIAS: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AParams {
    n_head: u32,
    n_kv: u32,
    head_dim: u32,
    window: u32,
    scale: f32,
    q_stride: u32,
    /// 1: decode with rope_kv fused in; 2: NeoX rotation; 4: q/k norms.
    flags: u32,
    n_rot: u32,
    eps: f32,
    /// Query heads and tokens per workgroup.
    heads: u32,
    tokens: u32,
    _p: u32,
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
    /// Where in the ids buffer the chosen id is also kept (sample.wgsl's `keep`): its step's
    /// slot of the submission's readback.
    pub keep: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub min_p: f32,
    pub u: f32,
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub _p1: f32,
}

// Per-step uniforms (Gpu::step_slot) have 64 bytes a slot at least.
const _: () = assert!(size_of::<SampleParams>() <= 64 && size_of::<Step>() <= 64);

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

impl Matrix {
    /// Bytes of its GPU buffers, all read once per token by a matvec.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.buffer.size()).sum()
    }
}

/// Streams a 2-D weight from the file into GPU buffers in the kernels' layout.
pub async fn upload_matrix(gpu: &Gpu, src: &mut impl ByteSource, t: &TensorInfo) -> Result<Matrix> {
    upload_stacked(gpu, src, &[t]).await
}

/// Whether `ts` can be stacked into one matrix: one row length, types that stack
/// (`quant::stack_type`), and (for the separated f16 scales, two to a word) an even block
/// count in all but the last.
pub fn stackable(ts: &[&TensorInfo]) -> bool {
    let k = ts[0].rows_cols().1;
    let Some(ty) = stack_type(ts) else { return false };
    ts.iter().all(|t| t.rows_cols().1 == k)
        && ts[..ts.len() - 1].iter().all(|t| {
            let (rows, k) = t.rows_cols();
            (rows * k / ty.block_size() as u64) % 2 == 0
        })
}

fn stack_type(ts: &[&TensorInfo]) -> Option<GgmlType> {
    quant::stack_type(&ts.iter().map(|t| t.ty).collect::<Vec<_>>())
}

/// Streams weights with one row length into GPU buffers as one matrix of their stack type
/// whose rows are theirs in order (q, k and v as one; gate over up), so that one dispatch
/// applies them all.
pub async fn upload_stacked(gpu: &Gpu, src: &mut impl ByteSource, ts: &[&TensorInfo]) -> Result<Matrix> {
    debug_assert!(stackable(ts));
    let t0 = ts[0];
    let k = t0.rows_cols().1 as usize;
    let rows: usize = ts.iter().map(|t| t.rows_cols().0 as usize).sum();
    let ty = stack_type(ts).expect("stackable");
    if k % 32 != 0 {
        return Err(Error::Unsupported(format!("tensor `{}` has row length {k}, not a multiple of 32", t0.name)));
    }
    let blocks_per_row = k / ty.block_size();
    let row_bytes = blocks_per_row * ty.block_bytes();
    // Whole rows per part, an even block count so separated f16 scales pack into words.
    let mut rows_per_part = rows;
    while (ty.gpu_words(rows_per_part * blocks_per_row) * 4) as u64 > gpu.max_binding() {
        rows_per_part = rows_per_part.div_ceil(2);
    }
    if rows_per_part == 0 || (ty.gpu_words(blocks_per_row) * 4) as u64 > gpu.max_binding() {
        return Err(Error::Limits(format!("one row of `{}` exceeds maxStorageBufferBindingSize", t0.name)));
    }
    if rows_per_part < rows && rows_per_part % 2 == 1 {
        rows_per_part += 1;
    }
    let mut chunk_rows = (UPLOAD_CHUNK / row_bytes).max(1);
    if chunk_rows % 2 == 1 && chunk_rows > 1 {
        chunk_rows -= 1;
    }
    // Stacked row -> (tensor, its row): the first stacked row of each tensor.
    let starts: Vec<usize> = ts.iter().scan(0, |acc, t| {
        let s = *acc;
        *acc += t.rows_cols().0 as usize;
        Some(s)
    }).collect();
    let mut parts = Vec::new();
    let mut row0 = 0;
    while row0 < rows {
        let n = rows_per_part.min(rows - row0);
        let n_blocks = n * blocks_per_row;
        let bodies_words = n_blocks * ty.body_words();
        let buffer = gpu.storage(&t0.name, (ty.gpu_words(n_blocks) * 4) as u64)?;
        let mut r = 0;
        while r < n {
            let i = starts.iter().rposition(|&s| s <= row0 + r).unwrap();
            let (t, in_t) = (ts[i], row0 + r - starts[i]);
            // A chunk never crosses from one tensor into the next.
            let m = chunk_rows.min(n - r).min(t.rows_cols().0 as usize - in_t);
            let file_row_bytes = blocks_per_row * t.ty.block_bytes();
            let mut bytes = src.read_at(t.offset + (in_t * file_row_bytes) as u64, m * file_row_bytes).await?;
            if bytes.len() != m * file_row_bytes {
                return Err(Error::Corrupt(format!("file ended inside tensor `{}`", t.name)));
            }
            if t.ty != ty {
                bytes = quant::widen_to_q8_0(t.ty, &bytes);
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
    let name = ts.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join("+");
    Ok(Matrix { name, ty, rows, k, parts })
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
    /// One workgroup per token (wrapped into y past 65535).
    Rows,
    /// `n` elements per token, 256 per workgroup.
    Elems(u32),
    /// A linear layer: the op's matvec for one token, a matmul of its quant type for more,
    /// its columns in `splits`; with `glu`, `rows` gate rows, each with its up row.
    Linear { rows: u32, last_only: bool, splits: u32, glu: bool },
    /// Adds up a split matmul's `rows`-wide slabs; nothing to do for one token (a matvec).
    SplitSum(u32),
    /// Attention's (blocks of query heads, key splits, blocks of `tokens` tokens).
    Attention { blocks: u32, tokens: u32 },
    /// Merges the key splits, x workgroups per token; nothing to do with one split.
    Combine(u32),
    Fixed(u32),
}

struct Op {
    /// What the op computes, for profiles ("Linear(Q4_1) attn_q", "Attention(1)").
    label: String,
    kernel: Kernel,
    /// One per step slot of a submission (Builder::slots).
    bind_groups: Vec<wgpu::BindGroup>,
    /// A split matmul's bindings: its sums go to the split scratch, not to y.
    split_bind: Option<wgpu::BindGroup>,
    grid: Grid,
    when: When,
}

/// Which steps run an op: decode steps whose output projection merges attention's key
/// splits itself (Shape::merged), or those that combine them in a pass of their own (none
/// with one split: attention writes its output whole).
#[derive(Clone, Copy, PartialEq)]
enum When {
    Always,
    Merged,
    Combined,
}

impl When {
    fn runs(self, merged: bool) -> bool {
        match self {
            When::Always => true,
            When::Merged => merged,
            When::Combined => !merged,
        }
    }
}

struct Activations {
    x: wgpu::Buffer,
    /// The residual's second buffer where decode folds post-norms into matvecs.
    x_alt: wgpu::Buffer,
    xn: wgpu::Buffer,
    tmp: wgpu::Buffer,
    /// Per token: q, k and v side by side.
    qkv: wgpu::Buffer,
    /// Attention's key-split partials (the logits' buffer).
    part: wgpu::Buffer,
    att: wgpu::Buffer,
    /// Per token: gate and up side by side.
    gu: wgpu::Buffer,
    ff: wgpu::Buffer,
}

/// A matvec's input, norm weights and residual (Lin's x, norm, post).
type LinInput<'a> = (&'a wgpu::Buffer, Option<(&'a wgpu::Buffer, f32)>, Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>);

impl Activations {
    /// Where the linear layers after a norm read: prefill from xn (the norm ran as its own
    /// op); decode from x, normed on the fly, or, with a post-norm folded in (`folded`: both
    /// norms' weights), from tmp and the residual `res` (in, out).
    fn normed_input<'a>(&'a self, decode: bool, norm: (&'a wgpu::Buffer, f32), folded: Option<&'a wgpu::Buffer>, res: (&'a wgpu::Buffer, &'a wgpu::Buffer)) -> LinInput<'a> {
        match (decode, folded) {
            (false, _) => (&self.xn, None, None),
            (true, Some(w)) => (&self.tmp, Some((w, norm.1)), Some(res)),
            (true, None) => (&self.x, Some(norm), None),
        }
    }
}

/// Where a sampling step's input tokens come from.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    Ids(&'a [u32]),
    /// The one id the previous sampling step chose, still on the GPU.
    Previous,
}

#[derive(Clone, Copy, Default, Debug)]
pub struct StepTimes {
    pub steps: usize,
    pub encode_ms: f64,
    pub wait_ms: f64,
}

/// Sampling steps submitted to the GPU in one command buffer and not yet read back.
pub struct Pending {
    slot: usize,
    steps: usize,
    at: wgpu::SubmissionIndex,
    encode_ms: f64,
}

/// Sampling steps one submission may hold (Transformer::submit_steps): one per slot of the
/// per-step uniforms.
pub const MAX_STEPS_PER_SUBMIT: usize = crate::gpu::STEP_SLOTS as usize;
/// Submissions of sampling steps a generation keeps made and not yet read back: one runs
/// while the one before it is read. (Three measured no faster in Chrome on the H100.)
pub const SUBMITS_IN_FLIGHT: usize = 2;

/// How a submission's sampling steps choose their tokens.
#[derive(Clone, Copy)]
pub enum Choice<'a> {
    /// The most likely token, this many steps.
    Greedy(usize),
    /// Sampled, one step per parameter set, under repetition penalties over the given
    /// (id, count) pairs (with one step only: they need every id chosen before it).
    Sample(&'a [SampleParams], &'a [[u32; 2]]),
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
    /// Attention partial results the scratch buffer holds: tokens x key splits.
    split_slots: usize,
    /// Decode's attention splits the keys into runs of at least this many positions: its
    /// kernel's tile, so a split of a short context is one round of loads.
    decode_split_keys: usize,
    /// Decode's output projection merges 2 to MERGE_MAX_SPLITS key splits itself.
    merges: bool,
    /// Decode attention projects its own q, k and v (attention_projected.wgsl) in the steps
    /// that merge, from 1 split on.
    pub projects: bool,
    body_prefill: Vec<Op>,
    body_decode: Vec<Op>,
    head_last: Vec<Op>,
    head_all: Vec<Op>,
    /// The decode path's head, with the final norm fused.
    head_decode: Vec<Op>,
    greedy: Vec<Op>,
    sample: Vec<Op>,
    step: wgpu::Buffer,
    ids: wgpu::Buffer,
    /// Shared with attention's partials: a forward's logits hold until the next forward.
    pub logits: wgpu::Buffer,
    sample_params: wgpu::Buffer,
    penalties: wgpu::Buffer,
    /// Readback slots, one per submission in flight (SUBMITS_IN_FLIGHT) holding its
    /// steps' ids, so one submission's ids can be read while later ones run.
    result_staging: Vec<wgpu::Buffer>,
    next_slot: std::cell::Cell<usize>,
    /// Bytes of weights in the file (GPU memory's yardstick), and of KV cache.
    pub weight_bytes: u64,
    pub kv_bytes: u64,
    /// Bytes of GPU weights read per decoded token (the bandwidth floor).
    pub bytes_per_token: u64,
    /// Bytes of GPU buffers the model holds: weights, KV cache, activations, scratch.
    pub gpu_bytes: u64,
    /// Totals over sampled steps since the last reset: CPU time encoding and submitting,
    /// and time blocked reading ids back (benchmarks tell CPU overhead from GPU work).
    pub(crate) step_times: std::cell::Cell<StepTimes>,
}

struct Builder<'a> {
    gpu: &'a Gpu,
    step: &'a wgpu::Buffer,
    /// Bound where a kernel's input or output goes unused: one read-only, one writable (a
    /// buffer may not be bound both ways in one dispatch).
    dummy: &'a wgpu::Buffer,
    dummy_out: &'a wgpu::Buffer,
    /// Where split matmuls put their slabs (prefill), and the most tokens a step has.
    split_scratch: Option<SplitScratch<'a>>,
    /// A split matmul's slabs that the next op (a norm, or the rotary kernel) adds up
    /// instead of a SplitSum op.
    slabs: Option<Slabs>,
    /// The steps that the ops pushed now run in.
    when: When,
    /// Step slots of a submission the ops run in (a bind group each): 1 for prefill and
    /// kernel tests, STEP_SLOTS for decode and the choice of the next token.
    slots: usize,
    ops: Vec<Op>,
}

#[derive(Clone, Copy)]
struct Slabs {
    splits: u32,
    /// The matmul accumulates into its output (the residual).
    accumulate: bool,
    /// The matmul has a bias, which the op that sums the slabs adds.
    bias: bool,
}

/// A buffer that is dead while the matmuls that split run (the prefill's gate/up output).
struct SplitScratch<'a> {
    buffer: &'a wgpu::Buffer,
    floats: usize,
    max_tokens: usize,
}

/// Where a linear layer reads and writes, and what it fuses.
struct Lin<'a> {
    x: &'a wgpu::Buffer,
    y: &'a wgpu::Buffer,
    /// First output column in y's rows, and floats per token row of y.
    out_offset: usize,
    out_stride: usize,
    bias: Option<&'a wgpu::Buffer>,
    /// RMSNorm weights applied to x on the fly (decode path), with its epsilon.
    norm: Option<(&'a wgpu::Buffer, f32)>,
    /// The residual in and out (matvec.wgsl's POST): the input is the residual plus x
    /// RMS-normed with the first half of `norm`'s weights, then normed with the second half.
    post: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>,
    flags: u32,
    /// The next op can add up the slabs of a split matmul (prefill: a norm, or the rotary
    /// kernel after q/k/v), saving the SplitSum dispatch.
    sum_next: bool,
    /// MERGE: x is attention's key-split partials of heads this wide; with `true`, this
    /// step's own q, key and value beside them (OWN, after attention_projected.wgsl).
    merged_heads: Option<(u32, bool)>,
}

/// "attn_q+attn_k" for blk.N.attn_q.weight+blk.N.attn_k.weight: profiles sum over layers.
fn role(name: &str) -> String {
    let one = |n: &str| {
        let n = n.trim_end_matches(".weight");
        match n.strip_prefix("blk.") {
            Some(r) => r.split_once('.').map_or(r, |(_, r)| r).to_string(),
            None => n.to_string(),
        }
    };
    name.split('+').map(one).collect::<Vec<_>>().join("+")
}

impl Builder<'_> {
    fn linear(&mut self, m: &Matrix, at: &Lin) {
        assert!(self.slabs.is_none(), "{} after a split matmul whose slabs nothing added up", m.name);
        let glu = at.flags & GLU != 0;
        for p in &m.parts {
            let mut flags = at.flags | if at.bias.is_some() { BIAS } else { 0 };
            flags |= if at.norm.is_some() { NORM } else { 0 };
            let rows = if glu { p.rows / 2 } else { p.rows };
            let lanes = self.gpu.matvec_lanes(m.k, rows as usize, glu && at.post.is_some());
            // `many` has no GLU, POST or MERGE.
            let input = match (at.merged_heads, at.post) {
                (Some(_), Some(_)) => unreachable!("{}: a matvec merges attention's splits or folds a post-norm, not both", m.name),
                (Some((_, false)), None) => MatVecInput::Merged,
                (Some((_, true)), None) => MatVecInput::MergedOwn,
                (None, Some(_)) => MatVecInput::PostNorm,
                (None, None) => MatVecInput::Direct,
            };
            let plain = flags & GLU == 0 && input == MatVecInput::Direct;
            let group_rows = if plain { self.gpu.matvec_group_rows(rows as usize, lanes) } else { 1 };
            let params = self.gpu.uniform(
                "wparams",
                &WParams {
                    k: m.k as u32,
                    rows,
                    scale_base: p.scale_base,
                    out_offset: (at.out_offset + p.row0 as usize) as u32,
                    out_stride: at.out_stride as u32,
                    flags,
                    eps: at.norm.map_or(0.0, |n| n.1),
                    split_k: at.merged_heads.map_or(m.k as u32, |h| h.0),
                },
            );
            let kernel = Kernel::MatVec(m.ty, lanes, group_rows, input);
            let (res_in, res_out) = at.post.unwrap_or((self.dummy, self.dummy_out));
            let bind = [&p.buffer, at.x, at.y, at.bias.unwrap_or(self.dummy), &params, self.step, at.norm.map_or(self.dummy, |n| n.0), res_in, res_out];
            let bg = self.bind(kernel, &bind);
            // Only plain products split (the fused norms need whole rows), and never into
            // the buffer they read or write.
            let scratch = self.split_scratch.as_ref().filter(|s| flags & (NORM | GLU | LAST_TOKEN) == 0 && at.post.is_none() && s.buffer != at.x && s.buffer != at.y);
            let split_k = scratch.map_or(m.k, |s| self.gpu.matmul_split_columns(rows as usize, m.k, s.max_tokens, s.floats / (s.max_tokens * rows as usize)));
            let splits = m.k.div_ceil(split_k) as u32;
            let split_bind = scratch.filter(|_| splits > 1).map(|s| {
                let params = self.gpu.uniform(
                    "wparams",
                    &WParams { k: m.k as u32, rows, scale_base: p.scale_base, out_offset: 0, out_stride: rows, flags: 0, eps: 0.0, split_k: split_k as u32 },
                );
                let bind = [&p.buffer, at.x, s.buffer, self.dummy, &params, self.step, self.dummy, self.dummy, self.dummy_out];
                self.gpu.bind_group(kernel, &bind, 0)
            });
            let fused = match (at.post, at.norm) {
                (Some(_), _) => "post+norm+",
                (None, Some(_)) => "norm+",
                _ => "",
            };
            let glu_name = if glu { "+glu" } else { "" };
            let merge = match at.merged_heads {
                Some((_, true)) => "merge+own+",
                Some(_) => "merge+",
                None => "",
            };
            // Matvec for one token, matmul for more.
            let label = format!("Linear({:?}) {merge}{fused}{}{glu_name}", m.ty, role(&m.name));
            let grid = Grid::Linear { rows, last_only: flags & LAST_TOKEN != 0, splits, glu };
            // (Fields, not push: scratch still borrows self.split_scratch.)
            self.ops.push(Op { label, kernel, bind_groups: bg, split_bind, grid, when: self.when });
            if splits > 1 && at.sum_next && m.parts.len() == 1 {
                self.slabs = Some(Slabs { splits, accumulate: flags & ACCUMULATE != 0, bias: at.bias.is_some() });
            } else if let Some(s) = scratch.filter(|_| splits > 1) {
                let out_offset = (at.out_offset + p.row0 as usize) as u32;
                let sflags = flags & (ACCUMULATE | BIAS);
                let params = self.gpu.uniform("sparams", &SParams { rows, splits, out_offset, out_stride: at.out_stride as u32, flags: sflags, _p: [0; 3] });
                let bind = [s.buffer, at.y, at.bias.unwrap_or(self.dummy), &params, self.step];
                let bind_groups = self.bind(Kernel::SplitSum, &bind);
                let label = format!("SplitSum({splits}) {}", role(&m.name));
                self.ops.push(Op { label, kernel: Kernel::SplitSum, bind_groups, split_bind: None, grid: Grid::SplitSum(rows), when: self.when });
            }
        }
    }

    /// `y = rmsnorm(x) * w`, or with `accumulate` `y += ...`; x's rows may be a split
    /// matmul's slabs.
    fn norm(&mut self, x: &wgpu::Buffer, w: &wgpu::Buffer, y: &wgpu::Buffer, n: usize, eps: f32, accumulate: bool) {
        self.norm_op("RmsNorm", [x, w, y, self.dummy_out], n, if accumulate { NORM_ADD } else { 0 }, eps);
    }

    /// `xn = rmsnorm(x) * w` where x is the residual; a split matmul that accumulates into
    /// it has its slabs added first, in the same dispatch.
    fn residual_norm(&mut self, x: &wgpu::Buffer, w: &wgpu::Buffer, xn: &wgpu::Buffer, n: usize, eps: f32) {
        match self.slabs {
            Some(s) => {
                assert!(s.accumulate, "the residual's norm after a split matmul that does not add into it");
                self.norm_op("RmsNorm sum+next", [self.dummy, w, x, xn], n, NORM_ADD | NORM_RAW | NORM_NEXT, eps)
            }
            None => self.norm(x, w, xn, n, eps, false),
        }
    }

    /// A post-norm and the next norm in one (prefill): `x += rmsnorm(sub) * w[..n]`, then
    /// `xn = rmsnorm(x) * w[n..]` (`w` stacks the two weights).
    fn post_norm(&mut self, sub: &wgpu::Buffer, w: &wgpu::Buffer, x: &wgpu::Buffer, xn: &wgpu::Buffer, n: usize, eps: f32) {
        self.norm_op("RmsNorm post+next", [sub, w, x, xn], n, NORM_ADD | NORM_NEXT, eps);
    }

    /// One norm per token row; pending slabs replace its input.
    fn norm_op(&mut self, label: &str, [x, w, y, normed]: [&wgpu::Buffer; 4], n: usize, flags: u32, eps: f32) {
        let (flags, splits, slabs) = match (self.slabs.take(), &self.split_scratch) {
            (Some(s), Some(scratch)) => {
                // Unless the residual takes them raw, the slabs stand for the matmul's own output.
                assert!(!s.accumulate || flags & NORM_RAW != 0, "{label}: slabs of a matmul that accumulates");
                assert!(!s.bias, "{label}: slabs of a matmul with a bias");
                (flags | NORM_SLABS, s.splits, scratch.buffer)
            }
            _ => (flags, 0, self.dummy),
        };
        let params = self.gpu.uniform("nparams", &NParams { n: n as u32, flags, eps, splits });
        let bg = self.bind(Kernel::RmsNorm, &[x, w, y, &params, self.step, normed, slabs]);
        let label = if splits > 0 { format!("{label} +{splits} slabs") } else { label.into() };
        self.push(label, Kernel::RmsNorm, bg, None, Grid::Rows);
    }

    /// rope_kv.wgsl over `n_heads` q and kv heads per token; pending slabs of the q/k/v
    /// matmul (with its bias) are its input.
    fn rope_kv(&mut self, [qkv, norm_w, freqs, k_cache, v_cache]: [&wgpu::Buffer; 5], bias: Option<&wgpu::Buffer>, params: PParams, n_heads: u32) {
        let (params, slabs) = match (self.slabs.take(), &self.split_scratch) {
            (Some(s), Some(scratch)) => {
                assert!(!s.accumulate && s.bias == bias.is_some(), "RopeKv: slabs of another matmul");
                let flags = params.flags | if s.bias { ROPE_BIAS } else { 0 };
                (PParams { splits: s.splits, flags, ..params }, scratch.buffer)
            }
            _ => (params, self.dummy),
        };
        let label = if params.splits > 0 { format!("RopeKv +{} slabs", params.splits) } else { "RopeKv".into() };
        let params = self.gpu.uniform("pparams", &params);
        let buffers = [qkv, norm_w, freqs, k_cache, v_cache, &params, self.step, slabs, bias.unwrap_or(self.dummy)];
        let bind_groups = self.bind(Kernel::RopeKv, &buffers);
        self.push(label, Kernel::RopeKv, bind_groups, None, Grid::PerToken(n_heads));
    }

    fn op(&mut self, kernel: Kernel, buffers: &[&wgpu::Buffer], grid: Grid) {
        assert!(self.slabs.is_none(), "{kernel:?} after a split matmul whose slabs nothing added up");
        let bg = self.bind(kernel, buffers);
        self.push(format!("{kernel:?}"), kernel, bg, None, grid);
    }

    /// The op's bind groups, one per step slot.
    fn bind(&self, kernel: Kernel, buffers: &[&wgpu::Buffer]) -> Vec<wgpu::BindGroup> {
        (0..self.slots).map(|slot| self.gpu.bind_group(kernel, buffers, slot)).collect()
    }

    fn push(&mut self, label: String, kernel: Kernel, bind_groups: Vec<wgpu::BindGroup>, split_bind: Option<wgpu::BindGroup>, grid: Grid) {
        self.ops.push(Op { label, kernel, bind_groups, split_bind, grid, when: self.when });
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
        let allocated_before = g.allocated.load(std::sync::atomic::Ordering::Relaxed);
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
        // Weights applied to the same input, uploaded stacked where their types allow (one
        // dispatch for q, k and v; one for gate and up); each with its first output row.
        let mut matrices = async |names: &[(String, usize)], k: usize, src: &mut _| -> Result<Vec<(Matrix, usize)>> {
            let mut ts = Vec::new();
            for (name, rows) in names {
                let t = tensor(name)?;
                check_shape(t, &[k, *rows])?;
                weight_bytes += t.size;
                ts.push(t);
            }
            let mut out = Vec::new();
            let (mut i, mut offset) = (0, 0);
            while i < ts.len() {
                let mut j = ts.len();
                while !stackable(&ts[i..j]) {
                    j -= 1;
                }
                let m = upload_stacked(g, src, &ts[i..j]).await?;
                let rows = m.rows;
                out.push((m, offset));
                offset += rows;
                i = j;
            }
            Ok(out)
        };
        let (e, qd, kvd) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim());
        let one = |name: &str, rows: usize| [(name.to_string(), rows)];

        let embd = matrices(&one("token_embd.weight", cfg.vocab), e, src).await?.remove(0).0;
        let output = match gguf.tensor("output.weight") {
            Some(_) => Some(matrices(&one("output.weight", cfg.vocab), e, src).await?.remove(0).0),
            None => None,
        };
        // Decode reads every layer weight and the output head once per token.
        bytes_per_token += output.as_ref().unwrap_or(&embd).bytes();

        // Small vectors (norm weights, biases) side by side in one buffer.
        let read_vectors = async |names: &[(String, usize)], src: &mut _| -> Result<Vec<f32>> {
            let mut all = Vec::new();
            for (name, n) in names {
                let t = tensor(name)?;
                check_shape(t, &[*n])?;
                all.extend(read_f32(src, t).await?);
            }
            Ok(all)
        };
        let upload = |label: &str, v: &[f32]| g.storage_init(label, bytemuck::cast_slice(v));
        let vectors = async |names: &[(String, usize)], src: &mut _| upload(&names[0].0, &read_vectors(names, src).await?);

        if cfg.head_dim > 256 || cfg.head_dim % 16 != 0 {
            return Err(Error::Unsupported(format!("head dimension {} (attention supports multiples of 16 up to 256)", cfg.head_dim)));
        }
        if cfg.n_kv_head == 0 || cfg.n_head % cfg.n_kv_head != 0 {
            return Err(Error::Corrupt(format!("{} query heads do not group over {} kv heads", cfg.n_head, cfg.n_kv_head)));
        }
        if cfg.n_rot > cfg.head_dim || cfg.n_rot % 2 == 1 {
            return Err(Error::Corrupt(format!("rope dimension {} does not fit head dimension {}", cfg.n_rot, cfg.head_dim)));
        }

        let f32s = |n: usize| (n * 4) as u64;
        let qkv_stride = qd + 2 * kvd;
        // Attention blocks, (query heads, tokens) per workgroup, of up to `cap` queries: the
        // heads are the largest divisor of the kv group that fits, tokens (prefill) fill the
        // rest. The untiled kernel keeps its block's q values in 1024 floats.
        let group = cfg.n_head / cfg.n_kv_head;
        let untiled = |cap: usize| cap.min(1024 / cfg.head_dim);
        let block = |cap: usize, tokens: bool| {
            let heads = (1..=cap.min(group)).rev().find(|h| group % h == 0).unwrap_or(1);
            (heads, if tokens { cap / heads } else { 1 })
        };
        let tiles = g.attention_tiles(cfg.head_dim);
        // [prefill, decode]
        let prefill_cap = if tiles.is_some() { TILE_QUERIES } else { untiled(PREFILL_QUERIES) };
        let blocks = [block(prefill_cap, true), block(untiled(g.tuning().attention_heads as usize), false)];
        // Key splits per token of a full prefill chunk: 4, or up to 16 where the chunk has
        // few attention blocks (Gemma 3 270M's one kv head: 16 blocks of 64 queries), until
        // its attention has the tuning's workgroups.
        let chunk_blocks = cfg.n_head / blocks[0].0 * max_batch.div_ceil(blocks[0].1);
        let chunk_splits = (g.tuning().min_workgroups as usize).div_ceil(chunk_blocks).clamp(4, 16);
        let decode_queries = (blocks[1].0 * blocks[1].1) as u32;
        let decode_split_keys = attention_keys_per_tile(decode_queries, cfg.head_dim as u32) as usize;
        let split_slots = ctx.div_ceil(MIN_KEYS_PER_SPLIT).min(MAX_SPLITS).max(chunk_splits * max_batch);
        // attention_partials.wgsl's part_stride floats per (token, head, split).
        // (Then each head's own q, key and value: attention_partials.wgsl's own_base.)
        let part_bytes = f32s(split_slots * cfg.n_head * (cfg.head_dim + 4) + 3 * cfg.n_head * cfg.head_dim);
        // Rows of logits one pass can return (scoring, perplexity): about 3% of the weights'
        // size, so GPU memory stays near weights + KV cache (Gemma's 262k vocabulary makes a
        // row 1 MB), or as many as fit beside attention's partials. The two share one buffer:
        // partials live within a layer's attention, logits from the head until the step's
        // sampler or the caller's readback, before the next forward's attention.
        let row_bytes = f32s(cfg.vocab);
        let file_weights: u64 = gguf.tensors.iter().map(|t| t.size).sum();
        let logit_rows = ((g.max_binding().min((file_weights / 32).max(part_bytes)) / row_bytes) as usize).clamp(1, max_batch);
        let logits = g.storage("attention partials, logits", part_bytes.max(row_bytes * logit_rows as u64))?;
        let act = Activations {
            x: g.storage("x", f32s(max_batch * e))?,
            x_alt: g.storage("x_alt", f32s(if cfg.post_norms { e } else { 1 }))?,
            xn: g.storage("xn", f32s(max_batch * e))?,
            tmp: g.storage("tmp", f32s(max_batch * e))?,
            qkv: g.storage("qkv", f32s(max_batch * qkv_stride))?,
            part: logits.clone(),
            att: g.storage("att", f32s(max_batch * qd))?,
            gu: g.storage("gate_up", f32s(max_batch * 2 * cfg.n_ff))?,
            ff: g.storage("ffn", f32s(max_batch * cfg.n_ff))?,
        };
        let step = g.per_step_uniform("step", &Step { n_tok: 0, pos0: 0, splits: 1, chunk: 1 });
        // A step's token ids, then each sampling step's choice of a submission (sample.wgsl's
        // `keep`), read back together.
        let ids = g.storage("ids", ((max_batch + MAX_STEPS_PER_SUBMIT) * 4) as u64)?;
        let dummy = g.storage("dummy", 16)?;
        let dummy_out = g.storage("dummy", 16)?;

        let rope_factors = match gguf.tensor("rope_freqs.weight") {
            Some(t) => {
                check_shape(t, &[cfg.n_rot / 2])?;
                Some(read_f32(src, t).await?)
            }
            None => None,
        };
        let inv_freq = g.storage_init("rope", bytemuck::cast_slice(&rope_inv_freq(&cfg, cfg.rope_base, rope_factors.as_deref())))?;
        let inv_freq_swa = g.storage_init("rope_swa", bytemuck::cast_slice(&rope_inv_freq(&cfg, cfg.rope_base_swa, None)))?;

        // Two dispatch lists over the same weights: prefill (many tokens: tiled matmuls, norms
        // as their own passes) and decode (one token: norms fused into the matvecs, fewer
        // dependent dispatches); both fuse the gated unit into the gate/up product.
        // Prefill's split matmuls (attention's projections, ffn_down) keep their slabs in the
        // gate/up buffer, which holds nothing live outside the FFN's first half.
        let split_scratch = SplitScratch { buffer: &act.gu, floats: max_batch * 2 * cfg.n_ff, max_tokens: max_batch };
        let mut pre = Builder { gpu: g, step: &step, dummy: &dummy, dummy_out: &dummy_out, split_scratch: Some(split_scratch), slabs: None, when: When::Always, slots: 1, ops: Vec::new() };
        let mut dec = Builder { gpu: g, step: &step, dummy: &dummy, dummy_out: &dummy_out, split_scratch: None, slabs: None, when: When::Always, slots: MAX_STEPS_PER_SUBMIT, ops: Vec::new() };
        for p in &embd.parts {
            let params = g.uniform(
                "eparams",
                &EParams { k: e as u32, row0: p.row0, rows: p.rows, scale_base: p.scale_base, scale: cfg.embed_scale, _p: [0; 3] },
            );
            for b in [&mut pre, &mut dec] {
                b.op(Kernel::Embed(embd.ty), &[&p.buffer, &ids, &act.x, &params, &step], Grid::PerToken((e as u32 / 4).div_ceil(64)));
            }
        }

        let kv_words = (ctx * kvd / 2 * 4) as u64;
        let mut kv_bytes = 0;
        let glu_params = g.uniform("gparams", &U4 { a: cfg.n_ff as u32, b: (cfg.act == Activation::GeluTanh) as u32, _p: [0; 2] });
        // Decode folds rope_kv into attention when each workgroup has one query.
        let fuse_rope = blocks[1] == (1, 1);
        // Decode's output projection merges the key splits where they are few and the heads
        // fit matvec.wgsl's workgroup memory (GPUs: CPU adapters attend in one split).
        let merges = g.tuning().whole_attention_keys < u32::MAX && qd <= MERGE_FLOATS;
        // Decode attention also projects its own q, k and v (one dispatch fewer a layer) where
        // the tuning asks, that is cheap (PROJECTION_GROUPS; the input staged in attention's
        // 2048 floats, the heads' outputs one group of 4 per thread of the merge: matvec.wgsl's
        // OWN), its output projection merges the key splits, nothing folds into the q/k/v
        // product (a bias, a post-norm), and every layer's q, k and v stack into one buffer.
        // Steps whose splits are too many to merge keep the q/k/v matvec.
        // Groups of 4 columns each of a q row's 256 / head_dim lanes takes.
        let projection_groups = cfg.head_dim * e / 1024;
        let projects = g.tuning().project_attention
            && fuse_rope
            && merges
            && !cfg.qkv_bias
            && !cfg.post_norms
            && cfg.head_dim.is_power_of_two()
            && projection_groups <= PROJECTION_GROUPS
            && e <= 2048
            && qd <= 1024
            && (0..cfg.n_layer).all(|l| match ["attn_q", "attn_k", "attn_v"].map(|r| gguf.tensor(&format!("blk.{l}.{r}.weight"))) {
                [Some(q), Some(k), Some(v)] => stackable(&[q, k, v]) && 2 * (q.size + k.size + v.size) <= g.max_binding(),
                _ => false,
            });
        let aparams = |window: u32, decode: bool| {
            let fused = decode && fuse_rope;
            let (heads, tokens) = blocks[decode as usize];
            g.uniform(
                "aparams",
                &AParams {
                    n_head: cfg.n_head as u32,
                    n_kv: cfg.n_kv_head as u32,
                    head_dim: cfg.head_dim as u32,
                    window,
                    scale: cfg.attn_scale,
                    q_stride: qkv_stride as u32,
                    flags: fused as u32 | (cfg.rope_neox as u32) << 1 | (cfg.qk_norm as u32) << 2,
                    n_rot: cfg.n_rot as u32,
                    eps: cfg.rms_eps,
                    heads: heads as u32,
                    tokens: tokens as u32,
                    _p: 0,
                },
            )
        };
        // [window][decode]: full and sliding-window layers, prefill and decode.
        let attn_params = [[aparams(0, false), aparams(0, true)], [aparams(cfg.window as u32, false), aparams(cfg.window as u32, true)]];
        let rope = PParams {
            n_head: cfg.n_head as u32,
            n_kv: cfg.n_kv_head as u32,
            head_dim: cfg.head_dim as u32,
            n_rot: cfg.n_rot as u32,
            stride: qkv_stride as u32,
            flags: cfg.rope_neox as u32 | if cfg.qk_norm { 2 } else { 0 },
            eps: cfg.rms_eps,
            splits: 0,
        };

        let mut last_post_ffw = None;
        // The layer before's post-FFN norm weights (post-norm models), for this layer's fold.
        let mut prev_post_ffw: Option<Vec<f32>> = None;
        for l in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{l}.{s}");
            let attn_norm_v = read_vectors(&one(&n("attn_norm.weight"), e), src).await?;
            let attn_norm = upload(&n("attn_norm.weight"), &attn_norm_v)?;
            let qkv_names = [(n("attn_q.weight"), qd), (n("attn_k.weight"), kvd), (n("attn_v.weight"), kvd)];
            let wqkv = matrices(&qkv_names, e, src).await?;
            let wo = matrices(&one(&n("attn_output.weight"), e), qd, src).await?.remove(0).0;
            let ffn_norm_v = read_vectors(&one(&n("ffn_norm.weight"), e), src).await?;
            let ffn_norm = upload(&n("ffn_norm.weight"), &ffn_norm_v)?;
            let wgu = matrices(&[(n("ffn_gate.weight"), cfg.n_ff), (n("ffn_up.weight"), cfg.n_ff)], e, src).await?;
            let wd = matrices(&one(&n("ffn_down.weight"), e), cfg.n_ff, src).await?.remove(0).0;
            bytes_per_token += wqkv.iter().chain(&wgu).map(|(m, _)| m.bytes()).sum::<u64>() + wo.bytes() + wd.bytes();
            let bqkv = if cfg.qkv_bias {
                Some(vectors(&[(n("attn_q.bias"), qd), (n("attn_k.bias"), kvd), (n("attn_v.bias"), kvd)], src).await?)
            } else {
                None
            };
            let qk_norm_v = if cfg.qk_norm {
                Some(read_vectors(&[(n("attn_q_norm.weight"), cfg.head_dim), (n("attn_k_norm.weight"), cfg.head_dim)], src).await?)
            } else {
                None
            };
            let qk_norm = qk_norm_v.as_ref().map(|v| upload(&n("attn_q_norm.weight"), v)).transpose()?;
            // attention_projected.wgsl's norm weights: the input norm's, then q's and k's.
            let projection = if projects {
                // (`projects` checked that q, k and v stack, and fit one binding.)
                debug_assert!(wqkv.len() == 1 && wqkv[0].0.parts.len() == 1, "layer {l}: q/k/v are not one buffer");
                let w = &wqkv[0].0;
                let norms = upload(&n("attn_norm.weight"), &[attn_norm_v.as_slice(), qk_norm_v.as_deref().unwrap_or(&[])].concat())?;
                let params = g.uniform("projparams", &U4 { a: e as u32, b: w.parts[0].scale_base, _p: [0; 2] });
                Some((w, norms, params))
            } else {
                None
            };
            let post_v = if cfg.post_norms {
                Some((read_vectors(&one(&n("post_attention_norm.weight"), e), src).await?, read_vectors(&one(&n("post_ffw_norm.weight"), e), src).await?))
            } else {
                None
            };
            let k_cache = g.storage("k_cache", kv_words)?;
            let v_cache = g.storage("v_cache", kv_words)?;
            kv_bytes += 2 * kv_words;
            let freqs = if cfg.swa_layers[l] { &inv_freq_swa } else { &inv_freq };
            let swa = cfg.swa_layers[l] as usize;
            let eps = cfg.rms_eps;

            // Decode with post-norms folds each but the last (see the head) into the next
            // matvec (POST): its norm weights go first, then the matvec's own norm's; the
            // residual alternates between x and x_alt, since a POST matvec reads one while
            // writing the other.
            let folded = match &post_v {
                Some((post_attn, _)) => {
                    let before_attn = match &prev_post_ffw {
                        Some(p) => Some(upload(&n("attn_norm.weight"), &[p.as_slice(), &attn_norm_v].concat())?),
                        None => None,
                    };
                    Some((before_attn, upload(&n("ffn_norm.weight"), &[post_attn.as_slice(), &ffn_norm_v].concat())?))
                }
                None => None,
            };
            // Every post-norm but the last layer's post-FFN one folds into what follows it.
            if l + 1 == cfg.n_layer {
                if let Some((_, f)) = &post_v {
                    last_post_ffw = Some(upload(&n("post_ffw_norm.weight"), f)?);
                }
            }
            prev_post_ffw = post_v.map(|p| p.1);

            for (b, decode) in [(&mut pre, false), (&mut dec, true)] {
                // Decode normalises inside the matvecs; prefill writes xn once for all of them.
                let lin = |x, y, out_offset, out_stride, norm, flags| Lin { x, y, out_offset, out_stride, bias: None, norm, post: None, flags, sum_next: false, merged_heads: None };
                let before_attn = folded.as_ref().and_then(|f| f.0.as_ref());
                if !decode {
                    match before_attn {
                        // The layer before left its FFN output in tmp: its post-norm and this
                        // layer's norm in one dispatch.
                        Some(w) => b.post_norm(&act.tmp, w, &act.x, &act.xn, e, eps),
                        None => b.residual_norm(&act.x, &attn_norm, &act.xn, e, eps),
                    }
                }
                let (x, nw, res) = act.normed_input(decode, (&attn_norm, eps), before_attn, (&act.x_alt, &act.x));
                let norm_w = qk_norm.as_ref().unwrap_or(&dummy);
                let fused = decode && fuse_rope;
                let projected = projection.as_ref().filter(|_| decode);
                if projected.is_some() {
                    b.when = When::Combined;
                }
                // One q/k/v matrix split over its columns leaves its slabs to the rotary kernel.
                let sum_next = !fused && wqkv.len() == 1;
                for (m, offset) in &wqkv {
                    b.linear(m, &Lin { bias: bqkv.as_ref(), post: res, sum_next, ..lin(x, &act.qkv, *offset, qkv_stride, nw, 0) });
                }
                if !fused {
                    let heads = (cfg.n_head + cfg.n_kv_head) as u32;
                    b.rope_kv([&act.qkv, norm_w, freqs, &k_cache, &v_cache], bqkv.as_ref(), rope, heads);
                }
                let abind = [&act.qkv, &k_cache, &v_cache, &act.part, &attn_params[swa][decode as usize], &step, &act.att, norm_w, freqs];
                let (heads, tokens) = blocks[decode as usize];
                let grid = Grid::Attention { blocks: (cfg.n_head / heads) as u32, tokens: tokens as u32 };
                let kernel = match tiles {
                    Some(t) if !decode => Kernel::AttentionTiles(t),
                    _ => {
                        let queries = (heads * tokens) as u32;
                        Kernel::Attention(queries, attention_keys_per_tile(queries, cfg.head_dim as u32))
                    }
                };
                b.op(kernel, &abind, grid);
                if let Some((w, norms, params)) = projected {
                    b.when = When::Merged;
                    let bind = [&act.x, &k_cache, &v_cache, &act.part, &attn_params[swa][1], &step, &act.att, norms, freqs, &w.parts[0].buffer, params];
                    let blocks = (cfg.n_head + 2 * cfg.n_kv_head) as u32;
                    let rounds = projection_groups.div_ceil(8) as u32;
                    b.op(Kernel::AttentionProjected(w.ty, attention_keys_per_tile(1, cfg.head_dim as u32), rounds), &bind, Grid::Attention { blocks, tokens: 1 });
                }
                // The output projection: after the combine pass, or (decode, few splits)
                // merging the splits itself.
                let hd = cfg.head_dim as u32;
                let projections: &[_] = if decode && merges {
                    &[(When::Combined, &act.att, None), (When::Merged, &act.part, Some((hd, projects)))]
                } else {
                    &[(When::Always, &act.att, None)]
                };
                b.when = projections[0].0;
                b.op(Kernel::AttentionCombine, &abind, Grid::Combine((cfg.n_head * cfg.head_dim.div_ceil(COMBINE_DIMS)) as u32));
                for &(when, att, merged_heads) in projections {
                    b.when = when;
                    match &folded {
                        Some((_, post_attn_ffn_norm)) => {
                            b.linear(&wo, &Lin { sum_next: true, merged_heads, ..lin(att, &act.tmp, 0, e, None, 0) });
                            if !decode {
                                b.post_norm(&act.tmp, post_attn_ffn_norm, &act.x, &act.xn, e, eps);
                            }
                        }
                        None => {
                            b.linear(&wo, &Lin { sum_next: true, merged_heads, ..lin(att, &act.x, 0, e, None, ACCUMULATE) });
                            if !decode {
                                b.residual_norm(&act.x, &ffn_norm, &act.xn, e, eps);
                            }
                        }
                    }
                }
                b.when = When::Always;
                let (x, nw, res) = act.normed_input(decode, (&ffn_norm, eps), folded.as_ref().map(|f| &f.1), (&act.x, &act.x_alt));
                // Stacked gate and up rows take the gated unit into their matvec, or into the
                // tiled matmul (the CPU adapters' untiled one keeps the Glu pass).
                let tiled = !g.tuning().matmul_by_rows;
                if (decode || tiled) && wgu.len() == 1 && wgu[0].0.parts.len() == 1 {
                    let glu = GLU | ((cfg.act == Activation::GeluTanh) as u32) << 8;
                    b.linear(&wgu[0].0, &Lin { post: res, ..lin(x, &act.ff, 0, cfg.n_ff, nw, glu) });
                } else {
                    for (m, offset) in &wgu {
                        b.linear(m, &Lin { post: res, ..lin(x, &act.gu, *offset, 2 * cfg.n_ff, nw, 0) });
                    }
                    b.op(Kernel::Glu, &[&act.gu, &act.ff, &glu_params, &step], Grid::Elems(cfg.n_ff as u32));
                }
                match &folded {
                    Some(_) => {
                        b.linear(&wd, &Lin { sum_next: true, ..lin(&act.ff, &act.tmp, 0, e, None, 0) });
                        // Other layers' post-FFN norms run with the next layer's first norm.
                        if let (false, Some(w)) = (decode, &last_post_ffw) {
                            b.norm(&act.tmp, w, &act.x, e, eps, true);
                        }
                    }
                    // The last layer's is followed by the heads' norms, in other op lists.
                    None => b.linear(&wd, &Lin { sum_next: l + 1 < cfg.n_layer, ..lin(&act.ff, &act.x, 0, e, None, ACCUMULATE) }),
                }
            }
        }
        let out_norm = vectors(&one("output_norm.weight", e), src).await?;
        let head = output.as_ref().unwrap_or(&embd);
        let to_logits = |x, norm, flags| Lin { x, y: &logits, out_offset: 0, out_stride: cfg.vocab, bias: None, norm, post: None, flags, sum_next: false, merged_heads: None };
        let body_prefill = std::mem::take(&mut pre.ops);
        let body_decode = std::mem::take(&mut dec.ops);
        pre.norm(&act.x, &out_norm, &act.xn, e, cfg.rms_eps, false);
        pre.linear(head, &to_logits(&act.xn, None, LAST_TOKEN));
        let head_last = std::mem::take(&mut pre.ops);
        pre.norm(&act.x, &out_norm, &act.xn, e, cfg.rms_eps, false);
        pre.linear(head, &to_logits(&act.xn, None, 0));
        let head_all = std::mem::take(&mut pre.ops);
        // The last post-norm stays an op of its own: folded into the head, each of the head's
        // many workgroups would sum x's squares again.
        let residual = match &last_post_ffw {
            Some(w) => {
                dec.norm(&act.tmp, w, &act.x_alt, e, cfg.rms_eps, true);
                &act.x_alt
            }
            None => &act.x,
        };
        dec.linear(head, &to_logits(residual, Some((&out_norm, cfg.rms_eps)), LAST_TOKEN));
        let head_decode = std::mem::take(&mut dec.ops);

        let sample_params = g.per_step_uniform("sparams", &SampleParams::default());
        let [partials, penalties, cand, counts] = sampler_buffers(g, cfg.vocab)?;
        // The choice goes straight to the next step's input.
        let sbind = [&logits, &partials, &ids, &penalties, &sample_params, &cand, &counts];
        let mut b = Builder { slots: MAX_STEPS_PER_SUBMIT, ..pre };
        push_argmax(&mut b, &sbind, cfg.vocab as u32);
        let greedy = std::mem::take(&mut b.ops);
        push_sampling(&mut b, &sbind, cfg.vocab as u32);
        let sample = std::mem::take(&mut b.ops);
        let result_staging = (0..SUBMITS_IN_FLIGHT).map(|_| g.readback_buffer("result", 4 * MAX_STEPS_PER_SUBMIT as u64)).collect();
        // Compile now every pipeline a prefill may pick (matmul tiles depend on the chunk's
        // length), not at the first prompt of each length; and every pipeline decode and
        // token choice use, merging key splits or not: a shader the adapter's compiler
        // rejects fails the load, not a reply halfway.
        let compile = |lists: &[&[Op]], shape: Shape| {
            for op in lists.iter().flat_map(|ops| ops.iter()) {
                if let Some((kernel, _)) = dispatch_of(g, op, shape) {
                    g.pipeline(kernel);
                }
            }
        };
        for n_tok in (1..=max_batch.div_ceil(MATMUL_TOKENS as usize)).map(|j| (j * MATMUL_TOKENS as usize).min(max_batch)).filter(|&n| n > 1) {
            compile(&[&body_prefill, &head_last, &head_all], Shape { n_tok: n_tok as u32, splits: 1, merged: false });
        }
        for merged in [false, merges] {
            compile(&[&body_decode, &head_decode, &greedy, &sample], Shape { n_tok: 1, splits: 2, merged });
        }
        g.queue.submit([]);
        gpu.check()?;
        Ok(Transformer {
            cfg,
            gpu: gpu.clone(),
            ctx,
            max_batch,
            logit_rows,
            split_slots,
            decode_split_keys,
            merges,
            projects,
            body_prefill,
            body_decode,
            head_last,
            head_all,
            head_decode,
            greedy,
            sample,
            step,
            ids,
            logits,
            sample_params,
            penalties,
            result_staging,
            next_slot: Default::default(),
            weight_bytes,
            kv_bytes,
            bytes_per_token,
            gpu_bytes: g.allocated.load(std::sync::atomic::Ordering::Relaxed) - allocated_before,
            step_times: Default::default(),
        })
    }

    /// Dispatches per token decoded at `pos`: the latency floor is this times the
    /// per-dispatch cost.
    pub fn dispatches_per_token(&self, pos: usize) -> usize {
        let shape = self.shape(1, pos).0;
        let ops = self.body_decode.iter().chain(&self.head_decode).chain(&self.greedy);
        ops.filter(|op| dispatch_of(&self.gpu, op, shape).is_some()).count()
    }

    /// The op lists that run `n_tok` tokens and then `logits`.
    fn plan(&self, n_tok: usize, logits: Logits) -> [&[Op]; 2] {
        // One token runs the decode list and its head (whose one row of logits is all of
        // them), so the prefill list always has several tokens: its split matmuls' slabs
        // are summed by norms that a matvec would not feed.
        let decode = n_tok == 1;
        let body = if decode { &self.body_decode } else { &self.body_prefill };
        let head: &[Op] = match logits {
            Logits::None => &[],
            _ if decode => &self.head_decode,
            Logits::Last => &self.head_last,
            Logits::All => &self.head_all,
        };
        [body, head]
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
        let shape = self.write_step(tokens, pos0);
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            encode(&self.gpu, &mut pass, self.plan(tokens.len(), logits).into_iter().flatten(), shape, 0);
        }
        self.gpu.queue.submit([enc.finish()]);
        if logits != Logits::All {
            return Ok(None);
        }
        let bytes = self.gpu.read(&self.logits, 0, (tokens.len() * self.cfg.vocab * 4) as u64).await?;
        Ok(Some(bytemuck::cast_slice(&bytes).to_vec()))
    }

    /// Writes the step's token ids and shape; returns what encoding it needs to know.
    fn write_step(&self, tokens: &[u32], pos0: usize) -> Shape {
        self.gpu.queue.write_buffer(&self.ids, 0, bytemuck::cast_slice(tokens));
        let (shape, step) = self.shape(tokens.len(), pos0);
        self.gpu.queue.write_buffer(&self.step, 0, bytemuck::bytes_of(&step));
        shape
    }

    /// The grid of a step: one key split up to the adapter's whole-attention length, else as
    /// many as the scratch holds for this many tokens, each at least MIN_KEYS_PER_SPLIT
    /// positions long (decode: decode_split_keys; fewer, longer splits cost less to combine).
    fn shape(&self, n_tok: usize, pos0: usize) -> (Shape, Step) {
        let keys = pos0 + n_tok;
        let splits = if keys <= self.gpu.tuning().whole_attention_keys as usize {
            1
        } else {
            let min_keys = if n_tok == 1 { self.decode_split_keys } else { MIN_KEYS_PER_SPLIT };
            (self.split_slots / n_tok).min(keys.div_ceil(min_keys)).clamp(1, MAX_SPLITS)
        };
        let chunk = keys.div_ceil(splits);
        let step = Step { n_tok: n_tok as u32, pos0: pos0 as u32, splits: splits as u32, chunk: chunk as u32 };
        // Attention that projects its own q/k/v leaves this step's key to the merge, even
        // with one split.
        let fewest = if self.projects { 1 } else { 2 };
        let merged = self.merges && (fewest..=MERGE_MAX_SPLITS).contains(&splits);
        (Shape { n_tok: n_tok as u32, splits: splits as u32, merged }, step)
    }

    /// Runs `tokens` and picks the next token on the GPU in the same submission; only the
    /// chosen id comes back. `params == None` means greedy.
    pub async fn forward_and_sample(
        &self,
        tokens: &[u32],
        pos0: usize,
        params: Option<(&SampleParams, &[[u32; 2]])>,
    ) -> Result<u32> {
        let choice = match params {
            Some((p, penalties)) => Choice::Sample(std::slice::from_ref(p), penalties),
            None => Choice::Greedy(1),
        };
        let pending = self.submit_steps(Input::Ids(tokens), pos0, choice)?;
        Ok(self.finish_steps(pending).await?[0])
    }

    /// Submits sampling steps in one command buffer and returns at once: a forward pass over
    /// `input` at `pos0` and the choice of the next token, then each further step (one per
    /// choice) a forward pass over the id the step before it chose, on the GPU. The last
    /// chosen id also stays on the GPU as the next submission's input (`Input::Previous`),
    /// so a caller can submit before reading back what it submitted last and the GPU never
    /// waits on the CPU's encoding or readback. Several steps a submission pay a browser's
    /// round trip (a flush and a buffer mapping, each a GPU-process task) once for them all.
    pub fn submit_steps(&self, input: Input, pos0: usize, choice: Choice) -> Result<Pending> {
        let n = match choice {
            Choice::Greedy(n) => n,
            Choice::Sample(params, _) => params.len(),
        };
        assert!((1..=MAX_STEPS_PER_SUBMIT).contains(&n), "{n} steps in one submission");
        let first = match input {
            Input::Ids(tokens) => tokens,
            Input::Previous => &[0][..],
        };
        self.check_batch(first, pos0, Logits::Last)?;
        // The further steps' tokens go to positions after the first's.
        let pos_of = |i: usize| if i == 0 { pos0 } else { pos0 + first.len() + i - 1 };
        self.check_batch(&[0], pos_of(n - 1), Logits::Last)?;
        self.gpu.check()?;
        if let Input::Ids(tokens) = input {
            self.gpu.queue.write_buffer(&self.ids, 0, bytemuck::cast_slice(tokens));
        }
        let vocab = self.cfg.vocab as u32;
        let params: Vec<SampleParams> = match choice {
            Choice::Greedy(n) => vec![SampleParams { vocab, ..Default::default() }; n],
            Choice::Sample(params, penalties) => {
                assert!(penalties.is_empty() || n == 1, "penalties need the ids chosen before");
                let pens = &penalties[..penalties.len().min(MAX_PENALTIES)];
                if !pens.is_empty() {
                    self.gpu.queue.write_buffer(&self.penalties, 0, bytemuck::cast_slice(pens));
                }
                params.iter().map(|p| SampleParams { vocab, n_penalties: pens.len() as u32, ..*p }).collect()
            }
        };
        // Each step's position and sampling parameters go to its own slot of the per-step
        // uniforms; its choice is also kept at its slot of the readback.
        let (steps, uniforms): (Vec<Shape>, Vec<Step>) = (0..n).map(|i| self.shape(if i == 0 { first.len() } else { 1 }, pos_of(i))).unzip();
        let params: Vec<SampleParams> = params.iter().enumerate().map(|(i, p)| SampleParams { keep: (self.max_batch + i) as u32, ..*p }).collect();
        self.gpu.write_slots(&self.step, &uniforms);
        self.gpu.write_slots(&self.sample_params, &params);
        let t0 = crate::engine::now_ms();
        let slot = self.next_slot.get();
        self.next_slot.set((slot + 1) % SUBMITS_IN_FLIGHT);
        let ops = if matches!(choice, Choice::Sample(..)) { &self.sample } else { &self.greedy };
        // One pass: each step's choice is the next one's input (ids[0]) and is kept after the
        // token ids for the one readback copy.
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for (i, shape) in steps.iter().enumerate() {
                encode(&self.gpu, &mut pass, self.plan(shape.n_tok as usize, Logits::Last).into_iter().flatten().chain(ops), *shape, i);
            }
        }
        enc.copy_buffer_to_buffer(&self.ids, self.max_batch as u64 * 4, &self.result_staging[slot], 0, n as u64 * 4);
        let at = self.gpu.queue.submit([enc.finish()]);
        Ok(Pending { slot, steps: n, at, encode_ms: crate::engine::now_ms() - t0 })
    }

    /// Waits for a submission's token ids, one per step.
    pub async fn finish_steps(&self, pending: Pending) -> Result<Vec<u32>> {
        let t0 = crate::engine::now_ms();
        let bytes = self.gpu.read_mapped(&self.result_staging[pending.slot], pending.steps as u64 * 4, pending.at).await?;
        let mut t = self.step_times.get();
        t.steps += pending.steps;
        t.encode_ms += pending.encode_ms;
        t.wait_ms += crate::engine::now_ms() - t0;
        self.step_times.set(t);
        let ids: Vec<u32> = bytemuck::cast_slice(&bytes).to_vec();
        if let Some(id) = ids.iter().find(|&&id| id >= self.cfg.vocab as u32) {
            return Err(Error::Gpu(format!("sampler returned token {id} outside the vocabulary (non-finite logits?)")));
        }
        Ok(ids)
    }

    /// GPU times of one step over `tokens` at `pos` (one token: a decode step; more: a
    /// prefill chunk) that picks the next token greedily or, given `sampling`, by sampling;
    /// `None` where the adapter has no timestamps. The step first runs untouched, as one
    /// pass timed at its ends. Then each op is timed: where timestamps can go inside a pass
    /// (native), in one pass, each op's time running from the end of the op before it to
    /// its own end (its launch, barrier and memory latency as the step sees them); elsewhere
    /// in a pass of its own. Either way the timestamps add a few µs per op, so the ops' sum
    /// exceeds the step.
    pub async fn profile(&self, tokens: &[u32], pos: usize, sampling: Option<&SampleParams>) -> Result<Option<Profile>> {
        let features = self.gpu.device.features();
        if !features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Ok(None);
        }
        let in_pass = features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);
        self.check_batch(tokens, pos, Logits::Last)?;
        let shape = self.write_step(tokens, pos);
        let p = SampleParams { vocab: self.cfg.vocab as u32, n_penalties: 0, ..sampling.copied().unwrap_or_default() };
        self.gpu.queue.write_buffer(&self.sample_params, 0, bytemuck::bytes_of(&p));
        let [body, head] = self.plan(tokens.len(), Logits::Last);
        let ops: Vec<&Op> = body
            .iter()
            .chain(head)
            .chain(if sampling.is_some() { &self.sample } else { &self.greedy })
            .filter(|op| dispatch_of(&self.gpu, op, shape).is_some())
            .collect();
        // Timestamp pairs per op: (start, end) with a pass each, (end of the previous, end)
        // in one pass.
        let span = |i: usize| if in_pass { (i, i + 1) } else { (2 * i, 2 * i + 1) };
        let per_op = if in_pass { ops.len() as u32 + 1 } else { ops.len() as u32 * 2 };
        // The whole step's pair comes last.
        let n = per_op + 2;
        let queries = self.gpu.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("profile"), ty: wgpu::QueryType::Timestamp, count: n });
        let resolved = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile"),
            size: n as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = timed_pass(&mut enc, &queries, per_op);
            for op in &ops {
                encode(&self.gpu, &mut pass, [*op], shape, 0);
            }
        }
        if in_pass {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.write_timestamp(&queries, 0);
            for (i, op) in ops.iter().enumerate() {
                encode(&self.gpu, &mut pass, [*op], shape, 0);
                pass.write_timestamp(&queries, i as u32 + 1);
            }
        } else {
            for (i, op) in ops.iter().enumerate() {
                let mut pass = timed_pass(&mut enc, &queries, i as u32 * 2);
                encode(&self.gpu, &mut pass, [*op], shape, 0);
            }
        }
        enc.resolve_query_set(&queries, 0..n, &resolved, 0);
        self.gpu.queue.submit([enc.finish()]);
        let bytes = self.gpu.read(&resolved, 0, n as u64 * 8).await?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        let ms_per_tick = self.gpu.queue.get_timestamp_period() as f64 / 1e6;
        let ms = |(a, b): (usize, usize)| ticks[b].saturating_sub(ticks[a]) as f64 * ms_per_tick;
        Ok(Some(Profile {
            step_ms: ms((per_op as usize, per_op as usize + 1)),
            ops: ops.iter().enumerate().map(|(i, op)| (op.label.clone(), ms(span(i)))).collect(),
        }))
    }
}

/// A compute pass that writes timestamps `at` and `at + 1` at its start and end.
fn timed_pass<'e>(enc: &'e mut wgpu::CommandEncoder, queries: &wgpu::QuerySet, at: u32) -> wgpu::ComputePass<'e> {
    enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: None,
        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
            query_set: queries,
            beginning_of_pass_write_index: Some(at),
            end_of_pass_write_index: Some(at + 1),
        }),
    })
}

/// GPU times in ms of one step (Transformer::profile).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Profile {
    /// The step as generation runs it: one pass, from its start to its end on the GPU.
    pub step_ms: f64,
    /// Each op's time (labels repeat across layers).
    pub ops: Vec<(String, f64)>,
}

/// What encoding a step needs beyond the op lists.
#[derive(Clone, Copy)]
struct Shape {
    n_tok: u32,
    /// Attention's key splits per token.
    splits: u32,
    /// Decode's output projection merges them (Transformer::merges, 2..=MERGE_MAX_SPLITS).
    merged: bool,
}

/// The pipeline and workgroup grid that run `op` for a step; `None` where the op has nothing
/// to do (a combine with one key split).
fn dispatch_of(gpu: &Gpu, op: &Op, shape: Shape) -> Option<(Kernel, [u32; 3])> {
    if !op.when.runs(shape.merged) {
        return None;
    }
    let n_tok = shape.n_tok;
    let (kernel, grid) = match op.grid {
        Grid::PerToken(x) => (op.kernel, [x, n_tok, 1]),
        Grid::Rows => (op.kernel, [n_tok.min(65535), n_tok.div_ceil(65535), 1]),
        Grid::Elems(n) => {
            let wgs = (n * n_tok).div_ceil(256);
            (op.kernel, [wgs.min(65535), wgs.div_ceil(65535), 1])
        }
        Grid::Linear { rows, last_only, splits, glu } => {
            let Kernel::MatVec(ty, lanes, group_rows, _) = op.kernel else { unreachable!("a linear op's kernel is its matvec") };
            if last_only || n_tok == 1 {
                // One token, so y continues x past 65535 workgroups (matvec.wgsl).
                let wgs = rows.div_ceil(256 / lanes * group_rows);
                (op.kernel, [wgs.min(65535), wgs.div_ceil(65535), 1])
            } else if gpu.tuning().matmul_by_rows {
                (Kernel::MatMulRows(ty), [rows.div_ceil(ROW_WORKGROUP), n_tok.div_ceil(ROW_TOKENS), 1])
            } else {
                let tokens = n_tok.div_ceil(MATMUL_TOKENS);
                // With GLU a tile holds gate rows and their up rows: half its rows are outputs,
                // and it needs two rows per thread.
                let (outputs, smallest) = if glu { (2, 32) } else { (1, 16) };
                let row_tiles = |tile: u32| rows.div_ceil(tile / outputs);
                let mut tile = 64;
                while tile > smallest && row_tiles(tile) * tokens * splits < gpu.tuning().min_workgroups {
                    tile /= 2;
                }
                (Kernel::MatMul(ty, tile), [row_tiles(tile), tokens, splits])
            }
        }
        Grid::SplitSum(rows) => {
            let wgs = if n_tok == 1 { 0 } else { (rows * n_tok).div_ceil(256) };
            (op.kernel, [wgs.min(65535), wgs.div_ceil(65535), 1])
        }
        Grid::Attention { blocks, tokens } => (op.kernel, [blocks, shape.splits, n_tok.div_ceil(tokens)]),
        Grid::Combine(x) => (op.kernel, [if shape.splits == 1 { 0 } else { x }, n_tok, 1]),
        Grid::Fixed(x) => (op.kernel, [x, 1, 1]),
    };
    grid.iter().all(|&n| n > 0).then_some((kernel, grid))
}

/// `slot` picks the bind groups of a submission's step (its slots of the per-step uniforms).
fn encode<'o>(gpu: &Gpu, pass: &mut wgpu::ComputePass, ops: impl IntoIterator<Item = &'o Op>, shape: Shape, slot: usize) {
    // A pipeline is set only where it changes: in a browser every command is work for the
    // GPU process, whose time per dispatch bounds small models' decode.
    let mut set = None;
    for op in ops {
        let Some((kernel, [x, y, z])) = dispatch_of(gpu, op, shape) else { continue };
        if set != Some(kernel) {
            pass.set_pipeline(&gpu.pipeline(kernel).pipeline);
            set = Some(kernel);
        }
        // A matmul over several workgroups in z is a split one.
        let bind_group = match &op.split_bind {
            Some(b) if z > 1 => b,
            _ => &op.bind_groups[slot],
        };
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Encodes `ops` in one compute pass and submits them (the stand-alone kernel runners).
fn submit_ops(gpu: &Gpu, ops: &[Op], n_tok: u32) {
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        encode(gpu, &mut pass, ops, Shape { n_tok, splits: 1, merged: false }, 0);
    }
    gpu.queue.submit([enc.finish()]);
}

/// What `apply_linear` folds into a one-token product, as decode's matvecs do.
pub enum Fold<'a> {
    None,
    /// x RMS-normed with these weights and epsilon (NORM).
    Norm(&'a [f32], f32),
    /// The input is this residual plus x RMS-normed with the weights' first k, then normed
    /// with their second k (POST): Gemma's post-norm and the next norm.
    Post(&'a [f32], &'a [f32], f32),
}

/// Applies one weight matrix to `n_tok` rows of `x` through the same kernels the model uses
/// (matvec for one token, matmul for more), with `fold` (one token only). Returns the
/// product and, with `Fold::Post`, the new residual. For kernel tests and diagnostics.
pub async fn apply_linear(gpu: &Gpu, m: &Matrix, x: &[f32], n_tok: usize, fold: &Fold<'_>) -> Result<(Vec<f32>, Vec<f32>)> {
    let step = gpu.per_step_uniform("step", &Step { n_tok: n_tok as u32, pos0: 0, splits: 1, chunk: 1 });
    let dummy = gpu.storage("dummy", 16)?;
    let dummy_out = gpu.storage("dummy", 16)?;
    let xb = gpu.storage_init("x", bytemuck::cast_slice(x))?;
    let y = gpu.storage("y", (n_tok * m.rows * 4) as u64)?;
    let floats = n_tok * m.rows * m.k / crate::gpu::MIN_SPLIT_COLUMNS;
    let scratch = gpu.storage("split scratch", (floats * 4) as u64)?;
    let split_scratch = SplitScratch { buffer: &scratch, floats, max_tokens: n_tok };
    let (weights, residual, eps) = match *fold {
        Fold::None => (None, None, 0.0),
        Fold::Norm(w, eps) => (Some(w), None, eps),
        Fold::Post(r, w, eps) => (Some(w), Some(r), eps),
    };
    let norm_w = weights.map(|w| gpu.storage_init("norm", bytemuck::cast_slice(w))).transpose()?;
    let res_in = residual.map(|r| gpu.storage_init("residual", bytemuck::cast_slice(r))).transpose()?;
    let res_out = gpu.storage("residual out", (m.k * 4) as u64)?;
    let mut b = Builder { gpu, step: &step, dummy: &dummy, dummy_out: &dummy_out, split_scratch: Some(split_scratch), slabs: None, when: When::Always, slots: 1, ops: Vec::new() };
    let (norm, post) = (norm_w.as_ref().map(|w| (w, eps)), res_in.as_ref().map(|r| (r, &res_out)));
    b.linear(m, &Lin { x: &xb, y: &y, out_offset: 0, out_stride: m.rows, bias: None, norm, post, flags: 0, sum_next: false, merged_heads: None });
    submit_ops(gpu, &b.ops, n_tok as u32);
    let bytes = gpu.read(&y, 0, (n_tok * m.rows * 4) as u64).await?;
    let residual = match res_in {
        Some(_) => bytemuck::cast_slice(&gpu.read(&res_out, 0, (m.k * 4) as u64).await?).to_vec(),
        None => Vec::new(),
    };
    Ok((bytemuck::cast_slice(&bytes).to_vec(), residual))
}

/// sample.wgsl's buffers beside the logits, parameters and the chosen id: chunk maxima,
/// penalties, the top-k candidates (per chunk its slots, then the gathered list: (value,
/// index) each), their count per chunk and the bounds that select them.
fn sampler_buffers(g: &Gpu, vocab: usize) -> Result<[wgpu::Buffer; 4]> {
    let chunks = vocab.div_ceil(CAND_CHUNK as usize);
    Ok([
        g.storage("partials", (vocab as u64).div_ceil(ARGMAX_CHUNK as u64) * 8)?,
        g.storage("penalties", (MAX_PENALTIES * 8) as u64)?,
        g.storage("candidates", (2 * chunks * CAND_CHUNK as usize * 8) as u64)?,
        // Per candidate chunk its count, then per argmax chunk sample_prepare's bound.
        g.storage("candidate counts", ((chunks + vocab.div_ceil(ARGMAX_CHUNK as usize)) * 4) as u64)?,
    ])
}

/// Greedy decoding's dispatches over `bind` (as push_sampling's): each chunk's largest
/// logit, then the largest of those.
fn push_argmax(b: &mut Builder, bind: &[&wgpu::Buffer; 7], vocab: u32) {
    b.op(Kernel::ArgmaxPartial, bind, Grid::Fixed(vocab.div_ceil(ARGMAX_CHUNK)));
    b.op(Kernel::ArgmaxFinal, bind, Grid::Fixed(1));
}

/// Sampling's dispatches over `bind` (logits, sampler_buffers' first three, the parameters,
/// its last two): penalties, chunk maxima and top-k bounds; top-k candidates per chunk; the
/// draw.
fn push_sampling(b: &mut Builder, bind: &[&wgpu::Buffer; 7], vocab: u32) {
    b.op(Kernel::SamplePrepare, bind, Grid::Fixed(vocab.div_ceil(ARGMAX_CHUNK)));
    b.op(Kernel::SampleCandidates, bind, Grid::Fixed(vocab.div_ceil(CAND_CHUNK)));
    b.op(Kernel::Sample, bind, Grid::Fixed(1));
}

/// Runs the GPU sampler on `logits` (one row); for tests against `sampling::sample_reference`.
pub async fn apply_sampler(gpu: &Gpu, logits: &[f32], p: &SampleParams, penalties: &[[u32; 2]]) -> Result<u32> {
    choose_on_gpu(gpu, logits, Some((p, penalties))).await
}

/// Runs decode's greedy choice (argmax in two passes) on `logits` (one row); for tests.
pub async fn apply_argmax(gpu: &Gpu, logits: &[f32]) -> Result<u32> {
    choose_on_gpu(gpu, logits, None).await
}

/// The token the GPU picks from `logits`: by sampling, or greedily where `sampling` is None.
async fn choose_on_gpu(gpu: &Gpu, logits: &[f32], sampling: Option<(&SampleParams, &[[u32; 2]])>) -> Result<u32> {
    let lb = gpu.storage_init("logits", bytemuck::cast_slice(logits))?;
    let [partials, pens, cand, counts] = sampler_buffers(gpu, logits.len())?;
    let result = gpu.storage("result", 16)?;
    let greedy = SampleParams::default();
    let (p, penalties) = sampling.unwrap_or((&greedy, &[]));
    if !penalties.is_empty() {
        gpu.queue.write_buffer(&pens, 0, bytemuck::cast_slice(penalties));
    }
    let params = gpu.per_step_uniform("sparams", &SampleParams { vocab: logits.len() as u32, n_penalties: penalties.len() as u32, ..*p });
    let dummy = gpu.storage("dummy", 16)?;
    let mut b = Builder { gpu, step: &dummy, dummy: &dummy, dummy_out: &dummy, split_scratch: None, slabs: None, when: When::Always, slots: 1, ops: Vec::new() };
    let bind = [&lb, &partials, &result, &pens, &params, &cand, &counts];
    match sampling {
        Some(_) => push_sampling(&mut b, &bind, logits.len() as u32),
        None => push_argmax(&mut b, &bind, logits.len() as u32),
    }
    submit_ops(gpu, &b.ops, 1);
    let bytes = gpu.read(&result, 0, 4).await?;
    Ok(u32::from_le_bytes(bytes[..4].try_into().unwrap()))
}
