//! ggml tensor types: block layouts (as in llama.cpp's ggml-common.h), a CPU reference
//! dequantizer, and the repacking into the word-aligned layout the WGSL kernels read.
//!
//! GPU layout: blocks whose size is a multiple of 4 bytes are uploaded unchanged. Blocks
//! that are not (Q4_0 18 B, Q5_0 22 B, Q8_0 34 B, Q6_K 210 B) all carry exactly one f16
//! scale `d`; it is moved to a separate region after all block bodies, so that bodies are
//! whole u32 words and no bandwidth is spent on padding.

use half::{bf16, f16};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl GgmlType {
    pub const ALL: [GgmlType; 10] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];

    pub fn from_id(id: u32) -> Result<Self, String> {
        Ok(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            30 => Self::BF16,
            _ => {
                let name = match id {
                    7 => "Q5_1",
                    9 => "Q8_1",
                    10 => "Q2_K",
                    11 => "Q3_K",
                    15 => "Q8_K",
                    16..=23 | 29 => "an IQ type",
                    24 => "I8",
                    25 => "I16",
                    26 => "I32",
                    27 => "I64",
                    28 => "F64",
                    34 | 35 => "a ternary type (TQ1_0/TQ2_0)",
                    39 => "MXFP4",
                    _ => "unknown",
                };
                return Err(format!(
                    "quantization type {id} ({name}) is not supported; supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K"
                ));
            }
        })
    }

    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q8_0 => 8,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::BF16 => 30,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q8_0 => "Q8_0",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
        }
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        match self {
            Self::F32 => 1,
            Self::F16 | Self::BF16 => 2, // two halves per GPU word
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q8_0 => 32,
            Self::Q4K | Self::Q5K | Self::Q6K => 256,
        }
    }

    /// Bytes per block in the file.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 4,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    /// Byte offset of the f16 scale that the GPU layout moves out of the block, if any.
    fn separate_scale_at(self) -> Option<usize> {
        match self {
            Self::Q4_0 | Self::Q5_0 | Self::Q8_0 => Some(0),
            Self::Q6K => Some(208),
            _ => None,
        }
    }

    /// u32 words per block body in the GPU layout.
    pub fn body_words(self) -> usize {
        (self.block_bytes() - if self.separate_scale_at().is_some() { 2 } else { 0 }) / 4
    }

    /// Size in u32 words of `n_blocks` blocks in the GPU layout (bodies, then scales).
    pub fn gpu_words(self, n_blocks: usize) -> usize {
        n_blocks * self.body_words()
            + if self.separate_scale_at().is_some() { n_blocks.div_ceil(2) } else { 0 }
    }
}

/// Converts `n_blocks` whole file blocks to the GPU layout. `bodies` receives the block
/// bodies; `scales` the separated f16 scales (two per word, first in the low half).
pub fn repack(ty: GgmlType, src: &[u8], bodies: &mut Vec<u32>, scales: &mut Vec<u16>) {
    let bb = ty.block_bytes();
    debug_assert_eq!(src.len() % bb, 0);
    match ty.separate_scale_at() {
        None => bodies.extend(src.chunks_exact(4).map(|w| u32::from_le_bytes(w.try_into().unwrap()))),
        Some(at) => {
            for block in src.chunks_exact(bb) {
                scales.push(u16::from_le_bytes([block[at], block[at + 1]]));
                let body = if at == 0 { &block[2..] } else { &block[..at] };
                bodies.extend(body.chunks_exact(4).map(|w| u32::from_le_bytes(w.try_into().unwrap())));
            }
        }
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// K-quant 6-bit scale and min for sub-block `j` (ggml's get_scale_min_k4).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// The 32 integers of a Q4_0, Q5_0 or Q8_0 block (value = integer * d, d the f16 at byte 0).
fn symmetric_ints(ty: GgmlType, b: &[u8]) -> [i8; 32] {
    let mut q = [0i8; 32];
    match ty {
        GgmlType::Q4_0 => {
            for (j, &byte) in b[2..18].iter().enumerate() {
                q[j] = (byte & 0xF) as i8 - 8;
                q[j + 16] = (byte >> 4) as i8 - 8;
            }
        }
        GgmlType::Q5_0 => {
            let qh = u32::from_le_bytes(b[2..6].try_into().unwrap());
            for (j, &byte) in b[6..22].iter().enumerate() {
                q[j] = ((byte & 0xF) as u32 | ((qh >> j) & 1) << 4) as i8 - 16;
                q[j + 16] = ((byte >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4) as i8 - 16;
            }
        }
        GgmlType::Q8_0 => q.iter_mut().zip(&b[2..34]).for_each(|(q, &byte)| *q = byte as i8),
        _ => unreachable!("{} is not a symmetric 32-block type", ty.name()),
    }
    q
}

/// The type that `types` stack as, if they can share one matrix: their own where they agree;
/// Q8_0 for a mix of Q4_0, Q5_0 and Q8_0, which widen to it exactly (same blocks, same
/// scales, integers in range), so a layer whose q/k and v differ in type (Gemma 3 270M's
/// Q5_0 and Q8_0) still takes one dispatch.
pub fn stack_type(types: &[GgmlType]) -> Option<GgmlType> {
    let symmetric = |t: &GgmlType| matches!(t, GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0);
    if types.iter().all(|&t| t == types[0]) {
        Some(types[0])
    } else if types.iter().all(symmetric) {
        Some(GgmlType::Q8_0)
    } else {
        None
    }
}

/// Rewrites whole `ty` blocks (Q4_0, Q5_0 or Q8_0) as Q8_0 blocks with the same values.
pub fn widen_to_q8_0(ty: GgmlType, src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() / ty.block_bytes() * GgmlType::Q8_0.block_bytes());
    for b in src.chunks_exact(ty.block_bytes()) {
        out.extend_from_slice(&b[..2]);
        out.extend(symmetric_ints(ty, b).iter().map(|&q| q as u8));
    }
    out
}

/// CPU reference dequantization of whole blocks from file bytes: the ground truth that
/// kernels are tested against.
pub fn dequantize(ty: GgmlType, src: &[u8], out: &mut Vec<f32>) {
    let bb = ty.block_bytes();
    for b in src.chunks_exact(bb) {
        match ty {
            GgmlType::F32 => out.push(f32::from_le_bytes(b.try_into().unwrap())),
            GgmlType::F16 => out.extend([f16_at(b, 0), f16_at(b, 2)]),
            GgmlType::BF16 => out.extend([
                bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                bf16::from_le_bytes([b[2], b[3]]).to_f32(),
            ]),
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
                let d = f16_at(b, 0);
                out.extend(symmetric_ints(ty, b).iter().map(|&q| q as f32 * d));
            }
            GgmlType::Q4_1 => {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| (q & 0xF) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let scales = &b[4..16];
                let (qh, qs) = if ty == GgmlType::Q5K { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
                for c in 0..4 {
                    for h in 0..2 {
                        let (sc, m) = scale_min_k4(2 * c + h, scales);
                        let (d1, m1) = (d * sc as f32, dmin * m as f32);
                        for l in 0..32 {
                            let mut q = (qs[32 * c + l] >> (4 * h)) as u32 & 0xF;
                            if ty == GgmlType::Q5K && (qh[l] >> (2 * c + h)) & 1 == 1 {
                                q += 16;
                            }
                            out.push(d1 * q as f32 - m1);
                        }
                    }
                }
            }
            GgmlType::Q6K => {
                let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                let d = f16_at(b, 208);
                for e in 0..256 {
                    let (nh, r) = (e / 128, e % 128);
                    let (g, l) = (r / 32, r % 32);
                    let lo = (ql[64 * nh + l + (g & 1) * 32] >> (4 * (g >> 1))) & 0xF;
                    let hi = (qh[32 * nh + l] >> (2 * g)) & 3;
                    let q = (lo | (hi << 4)) as i32 - 32;
                    out.push(d * (sc[8 * nh + l / 16 + 2 * g] as i8) as f32 * q as f32);
                }
            }
        }
    }
}

/// Random but well-formed blocks (finite, moderate scales) for kernel and model tests.
pub fn random_blocks(ty: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
    let mut rng = crate::sampling::Pcg::new(seed);
    let mut out: Vec<u8> = (0..n_blocks * ty.block_bytes()).map(|_| rng.next_u32() as u8).collect();
    let put_f16 = |out: &mut Vec<u8>, at: usize, v: f32| {
        out[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
    };
    for blk in 0..n_blocks {
        let o = blk * ty.block_bytes();
        let r = rng.next_f32() - 0.5;
        match ty {
            GgmlType::F32 => out[o..o + 4].copy_from_slice(&r.to_le_bytes()),
            GgmlType::F16 => {
                put_f16(&mut out, o, r);
                put_f16(&mut out, o + 2, rng.next_f32() - 0.5);
            }
            GgmlType::BF16 => {
                out[o..o + 2].copy_from_slice(&bf16::from_f32(r).to_le_bytes());
                out[o + 2..o + 4].copy_from_slice(&bf16::from_f32(rng.next_f32() - 0.5).to_le_bytes());
            }
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => put_f16(&mut out, o, r * 0.02),
            GgmlType::Q4_1 => {
                put_f16(&mut out, o, r.abs() * 0.02);
                put_f16(&mut out, o + 2, -r.abs() * 0.15);
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                put_f16(&mut out, o, r.abs() * 0.002);
                put_f16(&mut out, o + 2, r.abs() * 0.002);
            }
            GgmlType::Q6K => {
                put_f16(&mut out, o + 208, r * 0.0005);
            }
        }
    }
    out
}
