//! The GPU context: adapter and device selection (reading the adapter's real limits), buffer
//! helpers, readback, device-loss and validation-error tracking, and compute pipelines
//! composed from the WGSL files in shaders/.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::quant::GgmlType;

/// Binding kinds of a kernel, in binding order; they make the explicit bind group layouts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Bind {
    Read,
    ReadWrite,
    Uniform,
    /// A uniform with one slot per step of a submission (STEP_SLOTS, each Gpu::step_slot()
    /// bytes apart): the step's position, or its sampling parameters. A queue write lands
    /// before the whole submission, so each step binds its own slot, through a bind group
    /// of its own (not a dynamic offset, which in Chrome cost more a dispatch than the
    /// copies it saved).
    PerStep,
}

/// What a matvec's x is (matvec.wgsl), fixed per pipeline so each compiles only its own
/// path: the input itself; attention's key-split partials, merged first (MERGE), and with
/// this step's own key and value beside them (OWN, after attention_projected.wgsl); or a
/// sublayer's output, RMS-normed into the residual that is the input (POST).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MatVecInput {
    Direct,
    Merged,
    MergedOwn,
    PostNorm,
}

/// Slots of a per-step uniform (Bind::PerStep): the most steps one submission holds.
pub const STEP_SLOTS: u32 = 8;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kernel {
    /// Matrix x vector with this many threads per row, each group of them taking this many
    /// rows: 1, or MATVEC_MANY_ROWS (matvec.wgsl's `many`, for bandwidth-bound matrices);
    /// and what its x is.
    MatVec(GgmlType, u32, u32, MatVecInput),
    /// The tiled prefill matmul, with tiles of this many rows.
    MatMul(GgmlType, u32),
    /// The prefill matmul without workgroup tiles, for CPU adapters.
    MatMulRows(GgmlType),
    /// Adds up a split matmul's column slabs.
    SplitSum,
    Embed(GgmlType),
    RmsNorm,
    RopeKv,
    /// Attention's partial results, for blocks of up to this many queries, in tiles of this
    /// many keys (`attention_keys_per_tile`).
    Attention(u32, u32),
    /// Decode attention that projects its own q, k and v (attention_projected.wgsl) with
    /// weights of this type, in tiles of this many keys, each lane of a row taking this many
    /// rounds of 8 groups of 4 columns.
    AttentionProjected(GgmlType, u32, u32),
    /// Prefill attention in register tiles (attention_prefill.wgsl) for this head size.
    AttentionTiles(AttentionTiles),
    AttentionCombine,
    Glu,
    ArgmaxPartial,
    ArgmaxFinal,
    /// Sampling: penalties and chunk maxima, top-k candidates per chunk, the draw.
    SamplePrepare,
    SampleCandidates,
    Sample,
}

/// A shader's text with `#include NAME` lines replaced by the shared WGSL they name, and
/// whether it declares the override SG_MIN: `#include reduce` and `#include workgroup_sum`
/// pick their subgroup variants where the device has subgroups, and those take SG_MIN,
/// declared once here.
fn compose(src: &str, subgroups: bool) -> (String, bool) {
    let mut uses_subgroups = false;
    let body = src
        .lines()
        .map(|line| match line.strip_prefix("#include ") {
            Some("quant") => include_str!("../../../shaders/quant.wgsl"),
            Some("activation") => include_str!("../../../shaders/activation.wgsl"),
            Some("rotary") => include_str!("../../../shaders/rotary.wgsl"),
            Some("attention_common") => include_str!("../../../shaders/attention_common.wgsl"),
            Some("attention_partials") => include_str!("../../../shaders/attention_partials.wgsl"),
            Some("attention_projected") => include_str!("../../../shaders/attention_projected.wgsl"),
            Some("slab_sum") => include_str!("../../../shaders/slab_sum.wgsl"),
            Some("quant_q8_0_packed") => include_str!("../../../shaders/quant_q8_0_packed.wgsl"),
            Some("reduce") if subgroups => {
                uses_subgroups = true;
                include_str!("../../../shaders/reduce_subgroup.wgsl")
            }
            Some("reduce") => include_str!("../../../shaders/reduce_shared.wgsl"),
            Some("workgroup_sum") if subgroups => {
                uses_subgroups = true;
                include_str!("../../../shaders/workgroup_sum_subgroup.wgsl")
            }
            Some("workgroup_sum") => include_str!("../../../shaders/workgroup_sum_shared.wgsl"),
            Some(other) => panic!("unknown WGSL include `{other}`"),
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    if !uses_subgroups {
        return (body, false);
    }
    // Browsers (Tint) require the directive; naga rejects it and needs none.
    let enable = if cfg!(target_arch = "wasm32") { "enable subgroups;\n" } else { "" };
    (format!("{enable}override SG_MIN: u32 = 32u;\n{body}"), true)
}

/// Keys per tile of attention.wgsl for blocks of `queries` queries: 32, or with one query
/// (decode on GPUs) and heads up to 64 wide, 64: each thread then still loads 8 words of
/// every key at once, and decode's splits (one tile each) reach twice as far before the
/// output projection can no longer merge them (on an H100, SmolLM2 decode after 1536 tokens
/// +9%). More queries need TILE x queries threads for their scores; 16-key tiles for
/// 256-wide heads gained 0.4% after 128 tokens and lost 4.5% after 1536 (twice the splits).
pub fn attention_keys_per_tile(queries: u32, head_dim: u32) -> u32 {
    if queries == 1 && head_dim <= 64 { 64 } else { 32 }
}

/// attention.wgsl with the block size its arrays need: `HEADS` queries per workgroup at most,
/// their q values (at most 1024 floats), the fused decode's key and value (which runs with
/// one query per workgroup only), and TILE keys per tile.
fn attention(heads: u32, tile: u32) -> String {
    format!(
        "const HEADS: u32 = {heads}u;\nconst TILE: u32 = {tile}u;\nconst MAX_HEAD_VALUES: u32 = {}u;\nconst FUSED_DIM: u32 = {}u;\n{}",
        (heads * 256).min(1024),
        if heads == 1 { 256 } else { 1 },
        include_str!("../../../shaders/attention.wgsl")
    )
}

/// The stages of attention_prefill.wgsl for one head size: head dimensions per score stage
/// and keys per value stage.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AttentionTiles {
    pub head_dim: u32,
    pub stage_dims: u32,
    pub stage_keys: u32,
}

impl AttentionTiles {
    /// The largest stages that fit `bytes` of workgroup memory (fewer stages, fewer
    /// barriers), with at most four value words per thread; `None` for heads the kernel does
    /// not take (wider than 256, or not a multiple of 16: no score stage divides them) or too
    /// little memory.
    pub fn fitting(head_dim: u32, bytes: u32) -> Option<AttentionTiles> {
        if head_dim > 256 {
            return None;
        }
        // qs, ks, ps and vs of the kernel.
        let size = |dc: u32, vk: u32| 256 * dc + 136 * dc + 32 * 17 * 16 + vk * head_dim * 4;
        let dims = [64, 32, 16].into_iter().filter(|dc| head_dim % dc == 0);
        dims.flat_map(|dc| [32, 16, 8, 4].into_iter().map(move |vk| (dc, vk)))
            .find(|&(dc, vk)| vk * head_dim <= 2048 && size(dc, vk) <= bytes)
            .map(|(stage_dims, stage_keys)| AttentionTiles { head_dim, stage_dims, stage_keys })
    }

    fn source(self) -> String {
        format!(
            "const HD: u32 = {}u;\nconst DC: u32 = {}u;\nconst VK: u32 = {}u;\n{}",
            self.head_dim,
            self.stage_dims,
            self.stage_keys,
            include_str!("../../../shaders/attention_prefill.wgsl")
        )
    }
}

/// matmul.wgsl with its tile element: f16 where the device has shader-f16, else f32.
fn matmul(f16: bool, tile_rows: u32) -> String {
    let body = include_str!("../../../shaders/matmul.wgsl");
    if f16 {
        format!("enable f16;\nalias TV = vec4<f16>;\nconst TK: u32 = 32u;\nconst TM: u32 = {tile_rows}u;\n{body}")
    } else {
        format!("alias TV = vec4<f32>;\nconst TK: u32 = 16u;\nconst TM: u32 = {tile_rows}u;\n{body}")
    }
}

impl Kernel {
    /// The kernel's composed WGSL, its entry point, and whether it declares SG_MIN.
    fn source(self, subgroups: bool, f16: bool, packed_int8: bool) -> (String, &'static str, bool) {
        // Weight kernels get the dequantizer of their type as `load4`.
        let quant = |body: &str, ty: GgmlType| {
            let f = match ty {
                GgmlType::F32 => "load4_f32",
                GgmlType::F16 => "load4_f16",
                GgmlType::BF16 => "load4_bf16",
                GgmlType::Q4_0 => "load4_q4_0",
                GgmlType::Q4_1 => "load4_q4_1",
                GgmlType::Q5_0 => "load4_q5_0",
                GgmlType::Q8_0 => "load4_q8_0",
                GgmlType::Q4K => "load4_q4_k",
                GgmlType::Q5K => "load4_q5_k",
                GgmlType::Q6K => "load4_q6_k",
            };
            // `dot4`: the weights' dot product with 4 values of x, from `load4` but for Q8_0
            // where packed 8-bit integers are at hand.
            let dot4 = if ty == GgmlType::Q8_0 && packed_int8 {
                "#include quant_q8_0_packed\nfn dot4(r: u32, k: u32, xv: vec4<f32>) -> f32 { return dot4_q8_0(r, k, xv); }"
            } else {
                "fn dot4(r: u32, k: u32, xv: vec4<f32>) -> f32 { return dot(load4(r, k), xv); }"
            };
            format!("{}\n#include quant\nfn load4(r: u32, k: u32) -> vec4<f32> {{ return {f}(r, k); }}\n{dot4}\n", body)
        };
        let (src, entry) = match self {
            Kernel::MatVec(t, _, 1, _) => (quant(include_str!("../../../shaders/matvec.wgsl"), t), "main"),
            Kernel::MatVec(t, _, _, _) => (quant(include_str!("../../../shaders/matvec.wgsl"), t), "many"),
            Kernel::MatMul(t, rows) => (quant(&matmul(f16, rows), t), "main"),
            Kernel::MatMulRows(t) => (quant(&matmul(false, 64), t), "rows"),
            Kernel::SplitSum => (include_str!("../../../shaders/split_sum.wgsl").into(), "main"),
            Kernel::Embed(t) => (quant(include_str!("../../../shaders/embed.wgsl"), t), "main"),
            Kernel::RmsNorm => (include_str!("../../../shaders/rmsnorm.wgsl").into(), "main"),
            Kernel::RopeKv => (include_str!("../../../shaders/rope_kv.wgsl").into(), "main"),
            Kernel::Attention(block, tile) => (attention(block, tile), "partial"),
            Kernel::AttentionProjected(t, tile, _) => (quant(&format!("{}\n#include attention_projected", attention(1, tile)), t), "partial_projected"),
            Kernel::AttentionTiles(t) => (t.source(), "main"),
            Kernel::AttentionCombine => (attention(1, 32), "combine"),
            Kernel::Glu => (include_str!("../../../shaders/glu.wgsl").into(), "main"),
            Kernel::ArgmaxPartial => (include_str!("../../../shaders/sample.wgsl").into(), "argmax_partial"),
            Kernel::ArgmaxFinal => (include_str!("../../../shaders/sample.wgsl").into(), "argmax_final"),
            Kernel::SamplePrepare => (include_str!("../../../shaders/sample.wgsl").into(), "sample_prepare"),
            Kernel::SampleCandidates => (include_str!("../../../shaders/sample.wgsl").into(), "sample_candidates"),
            Kernel::Sample => (include_str!("../../../shaders/sample.wgsl").into(), "sample"),
        };
        let (text, sg_min) = compose(&src, subgroups);
        (text, entry, sg_min)
    }

    pub fn bindings(self) -> &'static [Bind] {
        use Bind::*;
        match self {
            // One layout for the matvec and the matmuls: the prefill list's linear ops run
            // either. The last two (the residual of matvec.wgsl's POST) only the matvec reads.
            Kernel::MatVec(..) | Kernel::MatMul(..) | Kernel::MatMulRows(_) => &[Read, Read, ReadWrite, Read, Uniform, PerStep, Read, Read, ReadWrite],
            Kernel::SplitSum => &[Read, ReadWrite, Read, Uniform, PerStep],
            Kernel::Embed(_) => &[Read, Read, ReadWrite, Uniform, PerStep],
            Kernel::RmsNorm => &[Read, Read, ReadWrite, Uniform, PerStep, ReadWrite, Read],
            Kernel::RopeKv => &[ReadWrite, Read, Read, ReadWrite, ReadWrite, Uniform, PerStep, Read, Read],
            // One layout for both entry points, so they share a bind group.
            Kernel::Attention(..) | Kernel::AttentionTiles(_) | Kernel::AttentionCombine => &[Read, ReadWrite, ReadWrite, ReadWrite, Uniform, PerStep, ReadWrite, Read, Read],
            // Then the q/k/v weights and their parameters; the layer's input is binding 0.
            Kernel::AttentionProjected(..) => &[Read, ReadWrite, ReadWrite, ReadWrite, Uniform, PerStep, ReadWrite, Read, Read, Read, Uniform],
            Kernel::Glu => &[Read, ReadWrite, Uniform, PerStep],
            Kernel::ArgmaxPartial | Kernel::ArgmaxFinal | Kernel::SamplePrepare | Kernel::SampleCandidates | Kernel::Sample => {
                &[ReadWrite, ReadWrite, ReadWrite, Read, PerStep, ReadWrite, ReadWrite]
            }
        }
    }
}

/// Kernel shapes for a kind of adapter. On a CPU rasterizer (lavapipe, SwiftShader) every
/// barrier and every extra workgroup costs time, so kernels there take more work per
/// workgroup; on GPUs they spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Threads per matvec row: 32 on GPUs, 1 on CPU adapters (no barriers there).
    pub matvec_lanes: u32,
    /// Query heads one decode attention workgroup serves at most: 1 on GPUs; 8 on CPU
    /// adapters, so a kv group's keys and values are read once. With 1, decode attention also
    /// does the q/k norms, rotation and cache append itself (one dispatch fewer per layer).
    /// (Prefill always takes blocks of heads and tokens.)
    pub attention_heads: u32,
    /// Prefill's linear layers as one invocation per (row, 8 tokens), without workgroup
    /// tiles or barriers (CPU adapters), instead of tiles shared through workgroup memory.
    pub matmul_by_rows: bool,
    /// Workgroups a prefill kernel should have at least, because a small model's prefill
    /// chunk in big tiles leaves most of a big GPU idle, and a workgroup alone cannot hide
    /// its memory latency: a tiled matmul's tiles shrink from 64 rows to 32 or 16 until it
    /// has them, and attention takes more key splits where its blocks are few.
    pub min_workgroups: u32,
    /// Workgroups a prefill matmul's column splits aim for (64-row tiles); 0: no splits.
    /// More than min_workgroups: a split costs only its slab's write and read, and on the
    /// H100 512 gave Gemma's 1024-token prefill 9% over 128.
    pub split_workgroups: u32,
    /// Workgroup memory prefill attention may take for its register tiles (GPUs; the
    /// adapter's limit applies too). 0: blocks of at most 8 queries without tiles (CPU
    /// adapters, where each of the tiles' barriers costs more than the tiles save).
    pub attention_tile_bytes: u32,
    /// Up to this many keys, a query's attention runs as one workgroup over all of them
    /// and writes its result, with no key splits to combine (a dispatch fewer per layer).
    /// Longer contexts split the keys so that the GPU stays busy; a CPU adapter gains
    /// nothing from splits.
    pub whole_attention_keys: u32,
    /// Decode attention projects its own q, k and v where that is cheap (transformer.rs's
    /// PROJECTION_GROUPS; SmolLM2): one dispatch fewer a layer for more GPU work. It pays
    /// where a dispatch costs the CPU more than the GPU: in browsers, whose GPU process
    /// spends 4-8 µs of CPU a dispatch (H100, Chrome: SmolLM2 +15%), not natively (H100:
    /// the step 0.874 -> 0.950 ms).
    pub project_attention: bool,
}

const NVIDIA: u32 = 0x10de;

/// Fewest columns one split of a prefill matmul takes.
pub const MIN_SPLIT_COLUMNS: usize = 32;

/// Rows per group of lanes in matvec.wgsl's `many`.
pub const MATVEC_MANY_ROWS: u32 = 8;
/// matvec.wgsl's MERGE: the most attention output floats (heads x head_dim) its workgroup
/// memory holds (8 KB, within WebGPU's 16 KB with the reductions' 6 KB).
pub const MERGE_FLOATS: usize = 2048;

impl Tuning {
    pub const GPU: Tuning = Tuning { matvec_lanes: 32, attention_heads: 1, matmul_by_rows: false, min_workgroups: 128, split_workgroups: 512, attention_tile_bytes: u32::MAX, whole_attention_keys: 0, project_attention: cfg!(target_arch = "wasm32") };
    pub const CPU: Tuning = Tuning { matvec_lanes: 1, attention_heads: 8, matmul_by_rows: true, min_workgroups: 0, split_workgroups: 0, attention_tile_bytes: 0, whole_attention_keys: u32::MAX, project_attention: false };
}

pub struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub driver: String,
    pub max_storage_binding: u64,
    pub max_buffer: u64,
    pub shader_f16: bool,
    pub subgroups: bool,
    /// Smallest subgroup the adapter may run (0 without the subgroups feature).
    pub subgroup_min_size: u32,
    /// WGSL's packed 8-bit integer builtins (the `packed_4x8_integer_dot_product` language
    /// feature: naga's, or the browser's).
    pub packed_int8: bool,
    /// A software rasterizer on the CPU (lavapipe, SwiftShader): kernels avoid barriers.
    pub cpu: bool,
}

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub limits: wgpu::Limits,
    pub summary: AdapterSummary,
    tuning: Tuning,
    /// Kernels compute in f16 where it pays (the prefill matmul's tiles): on by default where
    /// the device has shader-f16, except on NVIDIA, where f32 tiles measured 4-6% faster
    /// prefill on the H100 (BENCHMARKS.md, session 5); elsewhere f16 halves the tiles'
    /// workgroup memory traffic, and most other GPUs run f16 at twice the f32 rate.
    f16: bool,
    /// Bytes of storage and uniform buffers created so far (what a loaded model holds).
    pub allocated: std::sync::atomic::AtomicU64,
    /// Set by the device-lost callback or the uncaptured-error handler.
    failure: Arc<Mutex<Option<Error>>>,
    pipelines: Mutex<HashMap<Kernel, Arc<Pipeline>>>,
    /// One layout per binding signature, so kernels with the same signature (matvec and
    /// matmul) accept the same bind groups.
    layouts: Mutex<HashMap<&'static [Bind], wgpu::BindGroupLayout>>,
}

impl Gpu {
    /// Opens the default high-performance adapter and a device with its full limits.
    pub async fn new() -> Result<Gpu> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12 | wgpu::Backends::BROWSER_WEBGPU,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| Error::NoGpu(format!("no WebGPU/Vulkan adapter available ({e})")))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        if limits.max_compute_invocations_per_workgroup < 256 || limits.max_compute_workgroup_size_x < 256 {
            return Err(Error::Limits(format!(
                "kernels use 256 invocations per workgroup; the adapter allows {}",
                limits.max_compute_invocations_per_workgroup
            )));
        }
        let features = adapter.features();
        // Timestamps inside a pass (native only) time each dispatch where it runs in a step.
        let wanted = features
            & (wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);
        #[cfg(target_arch = "wasm32")]
        crate::browser_subgroups::request_subgroups(true);
        let device = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("gloss"),
                required_features: wanted,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await;
        #[cfg(target_arch = "wasm32")]
        crate::browser_subgroups::request_subgroups(false);
        let (device, queue) = device.map_err(|e| Error::NoGpu(format!("the adapter refused a device: {e}")))?;
        // Kernels with subgroups need the adapter's smallest subgroup size.
        let subgroups = info.subgroup_min_size > 0 && {
            #[cfg(target_arch = "wasm32")]
            let on = crate::browser_subgroups::has_subgroups(&device);
            #[cfg(not(target_arch = "wasm32"))]
            let on = wanted.contains(wgpu::Features::SUBGROUP);
            on
        };
        let failure: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
        let f = failure.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let mut slot = f.lock().unwrap();
            if slot.is_none() {
                *slot = Some(Error::DeviceLost(format!("{reason:?}: {msg}")));
            }
        });
        let f = failure.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = f.lock().unwrap();
            if slot.is_none() {
                *slot = Some(match e {
                    wgpu::Error::OutOfMemory { .. } => Error::Limits(format!("GPU out of memory: {e}")),
                    _ => Error::Gpu(e.to_string()),
                });
            }
        }));
        let summary = AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            driver: format!("{} {}", info.driver, info.driver_info),
            max_storage_binding: limits.max_storage_buffer_binding_size as u64,
            max_buffer: limits.max_buffer_size,
            shader_f16: wanted.contains(wgpu::Features::SHADER_F16),
            subgroups,
            subgroup_min_size: if subgroups { info.subgroup_min_size } else { 0 },
            packed_int8: instance.wgsl_language_features().contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct),
            cpu: info.device_type == wgpu::DeviceType::Cpu,
        };
        let tuning = if summary.cpu { Tuning::CPU } else { Tuning::GPU };
        Ok(Gpu {
            device,
            queue,
            limits,
            f16: summary.shader_f16 && info.vendor != NVIDIA,
            summary,
            tuning,
            allocated: Default::default(),
            failure,
            pipelines: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
        })
    }

    /// The first device loss or validation error since the last call, if any.
    pub fn check(&self) -> Result<()> {
        match self.failure.lock().unwrap().take() {
            Some(Error::DeviceLost(m)) => {
                // Loss is permanent: keep reporting it.
                *self.failure.lock().unwrap() = Some(Error::DeviceLost(m.clone()));
                Err(Error::DeviceLost(m))
            }
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn max_binding(&self) -> u64 {
        (self.limits.max_storage_buffer_binding_size as u64).min(self.limits.max_buffer_size)
    }

    /// A storage buffer; fails with the limit's name if the adapter cannot bind that much.
    pub fn storage(&self, label: &str, size: u64) -> Result<wgpu::Buffer> {
        if size > self.max_binding() {
            return Err(Error::Limits(format!(
                "buffer `{label}` needs {size} bytes but the adapter binds at most {} (maxStorageBufferBindingSize/maxBufferSize); short by {} bytes",
                self.max_binding(),
                size - self.max_binding()
            )));
        }
        self.allocated.fetch_add(size.max(16).next_multiple_of(4), std::sync::atomic::Ordering::Relaxed);
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.max(16).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }))
    }

    pub fn storage_init(&self, label: &str, data: &[u8]) -> Result<wgpu::Buffer> {
        let b = self.storage(label, data.len() as u64)?;
        self.queue.write_buffer(&b, 0, data);
        Ok(b)
    }

    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        let b = self.uniform_buffer(label, (std::mem::size_of::<T>() as u64).next_multiple_of(16));
        self.queue.write_buffer(&b, 0, bytemuck::bytes_of(value));
        b
    }

    fn uniform_buffer(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.allocated.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Bytes between the slots of a per-step uniform: room for the largest (sampling's
    /// parameters, 48 bytes) at the adapter's uniform offset alignment.
    pub fn step_slot(&self) -> u64 {
        64u64.next_multiple_of(self.limits.min_uniform_buffer_offset_alignment as u64)
    }

    /// A per-step uniform (Bind::PerStep), every slot holding `value`.
    pub fn per_step_uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        let b = self.uniform_buffer(label, self.step_slot() * STEP_SLOTS as u64);
        self.write_slots(&b, &[*value; STEP_SLOTS as usize]);
        b
    }

    /// Writes `values[i]` into slot i of a per-step uniform, all in one queue write.
    pub fn write_slots<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, values: &[T]) {
        let slot = self.step_slot() as usize;
        let mut bytes = vec![0u8; slot * values.len()];
        for (chunk, v) in bytes.chunks_exact_mut(slot).zip(values) {
            chunk[..size_of::<T>()].copy_from_slice(bytemuck::bytes_of(v));
        }
        self.queue.write_buffer(buffer, 0, &bytes);
    }

    pub fn readback_buffer(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Maps `buf` (a MAP_READ buffer whose copy went out in submission `after`) and returns
    /// its bytes. Natively this waits for that submission only, so work submitted after it
    /// keeps the GPU busy meanwhile.
    pub async fn read_mapped(&self, buf: &wgpu::Buffer, size: u64, after: wgpu::SubmissionIndex) -> Result<Vec<u8>> {
        let slice = buf.slice(0..size);
        let (tx, rx) = futures_channel::oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait { submission_index: Some(after), timeout: None })
            .map_err(|e| Error::DeviceLost(format!("waiting for the GPU failed: {e}")))?;
        #[cfg(target_arch = "wasm32")]
        let _ = after;
        let mapped = rx.await.map_err(|_| Error::DeviceLost("buffer mapping was abandoned".into()))?;
        self.check()?;
        mapped.map_err(|e| Error::Gpu(format!("buffer mapping failed: {e}")))?;
        let out = slice.get_mapped_range().map_err(|e| Error::Gpu(format!("mapped range: {e}")))?.to_vec();
        buf.unmap();
        Ok(out)
    }

    /// Copies `size` bytes of a storage buffer back to the CPU (tests, logits, debugging).
    pub async fn read(&self, src: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        let staging = self.readback_buffer("readback", size);
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(src, offset, &staging, 0, size.next_multiple_of(4));
        let at = self.queue.submit([enc.finish()]);
        let mut v = self.read_mapped(&staging, size.next_multiple_of(4), at).await?;
        v.truncate(size as usize);
        Ok(v)
    }

    pub fn pipeline(&self, kernel: Kernel) -> Arc<Pipeline> {
        if let Some(p) = self.pipelines.lock().unwrap().get(&kernel) {
            return p.clone();
        }
        let (src, entry, sg_min) = kernel.source(self.summary.subgroups, self.f16, self.summary.packed_int8);
        let mut constants = self.overrides(kernel);
        if sg_min {
            constants.push(("SG_MIN", self.summary.subgroup_min_size.max(1) as f64));
        }
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&format!("{kernel:?}")),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let layout = self.layout(kernel.bindings());
        let pl = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: None,
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&format!("{kernel:?}")),
            layout: Some(&pl),
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                ..Default::default()
            },
            cache: None,
        });
        let p = Arc::new(Pipeline { pipeline, layout });
        self.pipelines.lock().unwrap().insert(kernel, p.clone());
        p
    }

    /// Pipeline-overridable constants of the kernel's own (SG_MIN comes with the subgroup
    /// includes: `pipeline`).
    fn overrides(&self, kernel: Kernel) -> Vec<(&'static str, f64)> {
        let mut o = Vec::new();
        if let Kernel::MatVec(_, lanes, _, input) = kernel {
            o.push(("LANES", lanes as f64));
            match input {
                MatVecInput::Direct => {}
                MatVecInput::Merged => o.push(("MERGE_VEC4S", (MERGE_FLOATS / 4) as f64)),
                MatVecInput::MergedOwn => o.extend([("MERGE_VEC4S", (MERGE_FLOATS / 4) as f64), ("OWN", 1.0)]),
                MatVecInput::PostNorm => o.push(("POST", 1.0)),
            }
        }
        if let Kernel::AttentionProjected(_, _, rounds) = kernel {
            o.push(("PROJECTION_ROUNDS", rounds as f64));
        }
        o
    }

    /// Threads per matvec row for `rows` rows of length `k`: the tuning's, and on GPUs twice
    /// that, up to 256, until every thread has at most 4 groups of 4 columns, which it loads
    /// at once (matvec.wgsl). A layer's small matrices are latency-bound, and a thread that
    /// loops over its columns waits one memory round trip per iteration. Not past 4096
    /// workgroups: a vocabulary head is bandwidth-bound, and every workgroup reads x again.
    /// Nor for `heavy` rows (GLU with POST: two weight rows and four input vectors a group
    /// of columns): their many registers an invocation leave room for fewer workgroups at
    /// once, and half as many workgroups of twice the rows ran faster (Gemma 3's gate/up on
    /// an H100: 17.6 µs at 64 lanes, 14.5 at 32, 22 at 128).
    pub fn matvec_lanes(&self, k: usize, rows: usize, heavy: bool) -> u32 {
        let mut lanes = self.tuning.matvec_lanes;
        while !heavy && lanes > 1 && lanes < 256 && k.div_ceil(16) > lanes as usize && rows.div_ceil(128 / lanes as usize) <= 4096 {
            lanes *= 2;
        }
        lanes
    }

    /// Rows each group of `lanes` threads takes (matvec.wgsl's `many`): 1 where the matrix
    /// is latency-bound; for a bandwidth-bound one (more than 4096 workgroups of one row per
    /// group), enough that every x value is loaded and normalised once for several rows.
    pub fn matvec_group_rows(&self, rows: usize, lanes: u32) -> u32 {
        if lanes > 1 && rows.div_ceil(256 / lanes as usize) > 4096 { MATVEC_MANY_ROWS } else { 1 }
    }

    /// Columns per split of a prefill matmul of `rows` x `k` over `tokens` tokens (matmul.wgsl;
    /// `k` for no split). A small model's chunk has few 64 x 64 tiles (SmolLM2's ffn_down:
    /// 36 for 256 tokens on 132 SMs); splitting the columns gives the tuning's workgroups
    /// with big tiles, where smaller tiles would each redo more workgroup-memory reads per
    /// product. Splits are whole 32-column steps, at least MIN_SPLIT_COLUMNS long, and at
    /// most `max_splits` (what the scratch holds).
    pub fn matmul_split_columns(&self, rows: usize, k: usize, tokens: usize, max_splits: usize) -> usize {
        if self.tuning.matmul_by_rows {
            return k;
        }
        let tiles = rows.div_ceil(64) * tokens.div_ceil(64);
        let wanted = (self.tuning.split_workgroups as usize).div_ceil(tiles);
        let splits = wanted.min(k / MIN_SPLIT_COLUMNS).min(max_splits).max(1);
        k.div_ceil(splits).div_ceil(32) * 32
    }

    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// Prefill attention's register tiles for this head size, where the tuning takes them and
    /// they fit the adapter's workgroup memory.
    pub fn attention_tiles(&self, head_dim: usize) -> Option<AttentionTiles> {
        let bytes = self.tuning.attention_tile_bytes.min(self.limits.max_compute_workgroup_storage_size);
        AttentionTiles::fitting(head_dim as u32, bytes)
    }

    /// Shapes kernels as for another kind of adapter, before any pipeline exists: lets tests
    /// on a CPU adapter exercise the GPU configuration (subgroup shuffles, one attention head
    /// per workgroup, the fused decode attention).
    pub fn set_tuning(&mut self, tuning: Tuning) {
        assert!(tuning.matvec_lanes.is_power_of_two() && tuning.matvec_lanes <= 32);
        assert!((1..=8).contains(&tuning.attention_heads) && self.pipelines.get_mut().unwrap().is_empty());
        self.tuning = tuning;
    }

    /// Whether kernels take their f16 path.
    pub fn f16(&self) -> bool {
        self.f16
    }

    /// Chooses the f16 path or the f32 one (tests and `gloss --f16` compare them on one
    /// adapter), before any pipeline exists; f16 needs shader-f16.
    pub fn set_f16(&mut self, on: bool) {
        assert!((!on || self.summary.shader_f16) && self.pipelines.get_mut().unwrap().is_empty());
        self.f16 = on;
    }

    /// Leaves subgroups unused, as on adapters without them (tests put the workgroup-memory
    /// sums through the GPU-shaped kernels on an adapter that has subgroups), before any
    /// pipeline exists.
    pub fn disable_subgroups(&mut self) {
        assert!(self.pipelines.get_mut().unwrap().is_empty());
        self.summary.subgroups = false;
        self.summary.subgroup_min_size = 0;
    }

    fn layout(&self, sig: &'static [Bind]) -> wgpu::BindGroupLayout {
        let mut layouts = self.layouts.lock().unwrap();
        layouts
            .entry(sig)
            .or_insert_with(|| {
                let entries: Vec<wgpu::BindGroupLayoutEntry> = sig
                    .iter()
                    .enumerate()
                    .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                        binding: i as u32,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: match b {
                                Bind::Uniform | Bind::PerStep => wgpu::BufferBindingType::Uniform,
                                Bind::Read => wgpu::BufferBindingType::Storage { read_only: true },
                                Bind::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                            },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    })
                    .collect();
                self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries })
            })
            .clone()
    }

    /// `kernel`'s bindings of `buffers` for step `slot` of a submission (Bind::PerStep).
    pub fn bind_group(&self, kernel: Kernel, buffers: &[&wgpu::Buffer], slot: usize) -> wgpu::BindGroup {
        let p = self.pipeline(kernel);
        assert_eq!(buffers.len(), kernel.bindings().len(), "{kernel:?} binding count");
        let (offset, size) = (slot as u64 * self.step_slot(), wgpu::BufferSize::new(self.step_slot()));
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .zip(kernel.bindings())
            .enumerate()
            .map(|(i, (b, kind))| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: match kind {
                    Bind::PerStep => wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: b, offset, size }),
                    _ => b.as_entire_binding(),
                },
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&format!("{kernel:?}")),
            layout: &p.layout,
            entries: &entries,
        })
    }
}
