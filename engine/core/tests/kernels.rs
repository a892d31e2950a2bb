//! Every quant type through the real matvec and matmul kernels on awkward shapes, against
//! the CPU reference dequantizer; and the GPU sampler against its CPU reference.

mod common;

use gloss_engine::gguf::TensorInfo;
use gloss_engine::quant::{self, GgmlType};
use gloss_engine::sampling::{sample_reference, Pcg, Sampling};
use gloss_engine::transformer::{apply_argmax, apply_linear, apply_sampler, upload_matrix, Fold};

/// `tol`: error allowed relative to the sum of the products' magnitudes (f32 paths 1e-4; the
/// f16 tiles round each weight and input to 11 bits and sum four products in f16).
fn check_linear(gpu: &gloss_engine::Gpu, ty: GgmlType, rows: usize, k: usize, n_tok: usize, seed: u64, tol: f64) {
    let n_blocks = rows * k / ty.block_size();
    let mut bytes = quant::random_blocks(ty, n_blocks, seed);
    let mut w = Vec::new();
    quant::dequantize(ty, &bytes, &mut w);
    let mut rng = Pcg::new(seed + 1);
    let x: Vec<f32> = (0..n_tok * k).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
    let info = TensorInfo { name: "w".into(), dims: vec![k as u64, rows as u64], ty, offset: 0, size: bytes.len() as u64 };
    let m = pollster::block_on(upload_matrix(gpu, &mut bytes, &info)).unwrap();
    let (y, _) = pollster::block_on(apply_linear(gpu, &m, &x, n_tok, &Fold::None)).unwrap();
    for t in 0..n_tok {
        for r in 0..rows {
            let want: f64 = (0..k).map(|i| w[r * k + i] as f64 * x[t * k + i] as f64).sum();
            let norm: f64 = (0..k).map(|i| (w[r * k + i] as f64 * x[t * k + i] as f64).abs()).sum();
            let got = y[t * rows + r] as f64;
            assert!(
                (got - want).abs() <= tol * norm + 1e-6,
                "{} rows={rows} k={k} n_tok={n_tok}: y[{t}][{r}] = {got}, want {want}",
                ty.name()
            );
        }
    }
}

#[test]
fn every_quant_type_matches_reference_on_awkward_shapes() {
    let gpu = common::gpu();
    for ty in GgmlType::ALL {
        let k = if ty.block_size() == 256 { 512 } else { 96 };
        // One row; odd row counts not divisible by any workgroup tile; one token (matvec)
        // and several tokens not divisible by the matmul tile (matmul).
        for (rows, n_tok) in [(1, 1), (67, 1), (67, 3), (130, 37)] {
            check_linear(&gpu, ty, rows, k, n_tok, rows as u64 * 31 + n_tok as u64, 1e-4);
        }
    }
}

/// Q4_0 and Q5_0 widen to Q8_0 with every value unchanged (how mixed q/k/v stack), and the
/// stack type is Q8_0 only for such mixes.
#[test]
fn widening_to_q8_0_keeps_every_value() {
    for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
        let bytes = quant::random_blocks(ty, 64, 7);
        let (mut want, mut got) = (Vec::new(), Vec::new());
        quant::dequantize(ty, &bytes, &mut want);
        quant::dequantize(GgmlType::Q8_0, &quant::widen_to_q8_0(ty, &bytes), &mut got);
        assert_eq!(got, want, "{}", ty.name());
    }
    assert_eq!(quant::stack_type(&[GgmlType::Q5_0, GgmlType::Q5_0, GgmlType::Q8_0]), Some(GgmlType::Q8_0));
    assert_eq!(quant::stack_type(&[GgmlType::Q4_0, GgmlType::Q4_0]), Some(GgmlType::Q4_0));
    assert_eq!(quant::stack_type(&[GgmlType::Q4_1, GgmlType::Q8_0]), None);
    assert_eq!(quant::stack_type(&[GgmlType::Q4K, GgmlType::Q6K]), None);
}

/// The GPU configuration on this CPU adapter, which otherwise runs one matvec lane per row
/// and untiled matmuls: the matvec with 32 lanes per row (summed with subgroup shuffles
/// where the adapter has subgroups, else through workgroup memory) and the tiled matmul,
/// with f32 tiles and, where the adapter has shader-f16 (lavapipe does), f16 tiles.
#[test]
fn linear_in_gpu_tuning_matches_reference() {
    let probe = pollster::block_on(gloss_engine::Gpu::new()).unwrap();
    eprintln!("subgroups: {} (min size {}), shader-f16: {}", probe.summary.subgroups, probe.summary.subgroup_min_size, probe.summary.shader_f16);
    let paths: &[(bool, f64)] = if probe.summary.shader_f16 { &[(false, 1e-4), (true, 2e-3)] } else { &[(false, 1e-4)] };
    for &(f16, tol) in paths {
        let mut gpu = pollster::block_on(gloss_engine::Gpu::new()).unwrap();
        gpu.set_tuning(gloss_engine::Tuning::GPU);
        gpu.set_f16(f16);
        for ty in GgmlType::ALL {
            let k = if ty.block_size() == 256 { 512 } else { 96 };
            for rows in [1, 67] {
                check_linear(&gpu, ty, rows, k, 1, rows as u64 * 17 + 1, tol);
            }
            // Longer rows get more matvec lanes: 128 lanes with groups past the row's end,
            // and 256 lanes that loop twice.
            let b = ty.block_size().max(32);
            for k in [b * (1056 / b).max(2) + b, b * (4352 / b + 1)] {
                check_linear(&gpu, ty, 9, k, 1, k as u64, tol);
            }
        }
        // The matmuls in 64-, 32- and 16-row tiles (each shape, with these least workgroup
        // counts, gets each tile size): 130 x 37, a partial tile in both directions; 70 x 150,
        // several token tiles. Then with their columns split (and the slabs summed): in 2 or
        // 3 splits, one shorter than the others; in 3 to 8; in 32-column splits.
        let splits = [(0, 8), (0, 40), (u32::MAX, u32::MAX)];
        for (min_workgroups, split_workgroups) in [0, 4, 7, 9, 15, u32::MAX].map(|m| (m, 0)).into_iter().chain(splits) {
            let mut tiles = pollster::block_on(gloss_engine::Gpu::new()).unwrap();
            tiles.set_tuning(gloss_engine::Tuning { min_workgroups, split_workgroups, ..gloss_engine::Tuning::GPU });
            tiles.set_f16(f16);
            for ty in GgmlType::ALL {
                let k = if ty.block_size() == 256 { 512 } else { 96 };
                for (rows, n_tok) in [(130, 37), (70, 150)] {
                    check_linear(&tiles, ty, rows, k, n_tok, rows as u64 * 13 + n_tok as u64, tol);
                }
            }
        }
        // A bandwidth-bound matvec (more than 4096 workgroups at one row per 32 lanes): each
        // group of lanes takes 8 rows (matvec.wgsl's `many`), the last group only part; Q8_0
        // through its packed-integer dot product where WGSL has one.
        if !f16 {
            for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
                check_linear(&gpu, ty, 8 * 65535 + 24, 96, 1, 3, tol);
            }
        }
    }
}

/// Decode's folded norms against f64 references: NORM (x RMS-normed on the fly, also in the
/// `many` kernel of bandwidth-bound matrices) and POST (Gemma's post-norm added to the
/// residual, then the matvec's own norm, with the new residual written out), in this
/// adapter's tuning and a GPU's, with its rows summed by subgroups (where the adapter has
/// them) and through workgroup memory. The residual is large and correlated with x, as in
/// a model, so the cross term of the new residual's norm counts.
#[test]
fn folded_norms_match_reference() {
    for (tuning, subgroups) in [(None, true), (Some(gloss_engine::Tuning::GPU), true), (Some(gloss_engine::Tuning::GPU), false)] {
        let mut gpu = pollster::block_on(gloss_engine::Gpu::new()).unwrap();
        if let Some(t) = tuning {
            gpu.set_tuning(t);
        }
        if !subgroups {
            gpu.disable_subgroups();
        }
        for (ty, rows, k) in [(GgmlType::Q8_0, 67, 640), (GgmlType::Q4K, 1, 512), (GgmlType::Q5_0, 40, 96), (GgmlType::Q8_0, 8 * 4096 + 24, 64)] {
            let seed = rows as u64 + k as u64;
            let mut bytes = quant::random_blocks(ty, rows * k / ty.block_size(), seed);
            let mut w = Vec::new();
            quant::dequantize(ty, &bytes, &mut w);
            let info = TensorInfo { name: "w".into(), dims: vec![k as u64, rows as u64], ty, offset: 0, size: bytes.len() as u64 };
            let m = pollster::block_on(upload_matrix(&gpu, &mut bytes, &info)).unwrap();
            let mut rng = Pcg::new(seed);
            let mut uniform = |lo: f32, hi: f32| lo + (hi - lo) * rng.next_f32();
            let residual: Vec<f32> = (0..k).map(|_| uniform(-4.0, 4.0)).collect();
            let x: Vec<f32> = residual.iter().map(|r| 0.3 * r + uniform(-0.5, 0.5)).collect();
            let weights: Vec<f32> = (0..2 * k).map(|_| uniform(0.5, 1.5)).collect();
            let eps = 1e-6;
            let inv_rms = |v: &[f64]| 1.0 / (v.iter().map(|a| a * a).sum::<f64>() / k as f64 + eps as f64).sqrt();
            let check = |what: &str, y: &[f32], input: &[f64]| {
                for r in 0..rows {
                    let want: f64 = (0..k).map(|i| w[r * k + i] as f64 * input[i]).sum();
                    let size: f64 = (0..k).map(|i| (w[r * k + i] as f64 * input[i]).abs()).sum();
                    assert!((y[r] as f64 - want).abs() <= 1e-4 * size + 1e-6, "{what} {} rows={rows} k={k}: y[{r}] = {}, want {want}", ty.name(), y[r]);
                }
            };
            let xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let inv = inv_rms(&xs);
            let normed: Vec<f64> = (0..k).map(|i| xs[i] * inv * weights[i] as f64).collect();
            let (y, _) = pollster::block_on(apply_linear(&gpu, &m, &x, 1, &Fold::Norm(&weights[..k], eps))).unwrap();
            check("norm", &y, &normed);
            if rows > 8 * 4096 {
                continue; // `many` folds no POST
            }
            let new_res: Vec<f64> = (0..k).map(|i| residual[i] as f64 + normed[i]).collect();
            let inv = inv_rms(&new_res);
            let input: Vec<f64> = (0..k).map(|i| new_res[i] * inv * weights[k + i] as f64).collect();
            let (y, res_out) = pollster::block_on(apply_linear(&gpu, &m, &x, 1, &Fold::Post(&residual, &weights, eps))).unwrap();
            check("post", &y, &input);
            for i in 0..k {
                assert!((res_out[i] as f64 - new_res[i]).abs() <= 1e-5 * new_res[i].abs().max(1.0), "post residual[{i}] = {}, want {}", res_out[i], new_res[i]);
            }
        }
    }
}

#[test]
fn gpu_sampler_matches_cpu_reference() {
    let gpu = common::gpu();
    let mut rng = Pcg::new(7);
    let logits: Vec<f32> = (0..5003).map(|_| rng.next_f32() * 12.0 - 6.0).collect();
    let greedy = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
    // A last (partial) 4096-logit chunk of 100 holds the largest logits: with top-k past
    // 100, the other chunk's bound counts.
    let high_tail: Vec<f32> = logits[..4196].iter().enumerate().map(|(i, &v)| if i >= 4096 { v + 14.0 } else { v }).collect();
    // The 20 largest, each the largest of a different invocation's logits in sample_prepare:
    // that chunk's bound is the vocabulary's 20th largest logit itself.
    let spread: Vec<f32> = logits.iter().enumerate().map(|(i, &v)| if (1024..1104).contains(&i) && i % 4 == 0 { 14.0 - i as f32 * 1e-3 } else { v }).collect();
    // Ties: 25 distinct values, top-k keeps each tie of its last value.
    let ties: Vec<f32> = logits.iter().map(|v| (v * 2.0).round() / 2.0).collect();
    let cases = [
        (&logits, Sampling { temperature: 0.8, top_k: 40, top_p: 0.9, min_p: 0.0, ..Sampling::default() }),
        (&logits, Sampling { temperature: 1.3, top_k: 0, top_p: 1.0, min_p: 0.02, ..Sampling::default() }),
        (&logits, Sampling { temperature: 0.5, top_k: 5, top_p: 0.5, min_p: 0.1, ..Sampling::default() }),
        (&logits, Sampling { temperature: 1.0, top_k: 0, top_p: 0.3, min_p: 0.0, repeat_penalty: 1.3, presence_penalty: 0.5, frequency_penalty: 0.2, ..Sampling::default() }),
        // Penalties with top-k: the candidates come from the penalized logits.
        (&logits, Sampling { temperature: 0.9, top_k: 20, top_p: 0.95, min_p: 0.05, repeat_penalty: 1.5, presence_penalty: 0.3, ..Sampling::default() }),
        (&high_tail, Sampling { temperature: 3.0, top_k: 150, top_p: 1.0, min_p: 0.0, ..Sampling::default() }),
        (&spread, Sampling { temperature: 2.0, top_k: 20, top_p: 1.0, min_p: 0.0, ..Sampling::default() }),
        (&ties, Sampling { temperature: 1.0, top_k: 40, top_p: 0.9, min_p: 0.0, ..Sampling::default() }),
        // More candidates than workgroup memory holds (no bounds past top-k 256), with and
        // without top-k's survivors fitting there.
        (&logits, Sampling { temperature: 3.0, top_k: 900, top_p: 0.9, min_p: 0.0, ..Sampling::default() }),
        (&logits, Sampling { temperature: 2.0, top_k: 1500, top_p: 0.99, min_p: 0.0, ..Sampling::default() }),
    ];
    let history: Vec<u32> = vec![greedy, 3, 3, 17, greedy, 4000];
    for (ci, (logits, s)) in cases.iter().enumerate() {
        let pens = s.penalties(&history);
        let mut seen = std::collections::HashSet::new();
        for i in 0..12 {
            let p = s.params(rng.next_f32());
            let want = sample_reference(logits, &p, &pens);
            let got = pollster::block_on(apply_sampler(&gpu, logits, &p, &pens)).unwrap();
            assert_eq!(got, want, "case {ci} draw {i}");
            seen.insert(got);
        }
        assert!(seen.len() > 1, "case {ci}: sampling never varied");
    }
    // u at the top end, where u * total can round past the running sums: the last survivor.
    let p = gloss_engine::transformer::SampleParams { u: 1.0, ..cases[0].1.params(0.0) };
    assert_eq!(pollster::block_on(apply_sampler(&gpu, &logits, &p, &[])).unwrap(), sample_reference(&logits, &p, &[]));
    // Temperature 0 is greedy; with penalties, greedy over the penalized logits.
    let p = Sampling::greedy().params(0.99);
    assert_eq!(pollster::block_on(apply_sampler(&gpu, &logits, &p, &[])).unwrap(), greedy);
}

/// Decode's greedy choice (a 4096-logit chunk's largest per workgroup, sixteen per thread,
/// then the largest of those) against a sequential argmax: the largest logit planted in
/// each of a thread's sixteen, in a last partial chunk, and tied (the lower index wins).
#[test]
fn gpu_argmax_matches_cpu_reference() {
    let gpu = common::gpu();
    let mut rng = Pcg::new(11);
    let base: Vec<f32> = (0..70001).map(|_| rng.next_f32() * 12.0 - 6.0).collect();
    let first_max = |v: &[f32]| v.iter().enumerate().fold(0, |b, (i, &x)| if x > v[b] { i } else { b }) as u32;
    let mut cases: Vec<Vec<f32>> = (0..16).map(|e| {
        let mut v = base.clone();
        v[3 * 4096 + e * 256 + 17] = 9.0;
        v
    }).collect();
    let mut tail = base.clone();
    tail[70000] = 9.0;
    cases.push(tail);
    let mut tied = base.clone();
    tied[8 * 4096 + 2 * 256 + 5] = 9.0;
    tied[8 * 4096 + 11 * 256 + 5] = 9.0;
    tied[40000] = 9.0;
    cases.push(tied);
    for (i, logits) in cases.iter().enumerate() {
        assert_eq!(pollster::block_on(apply_argmax(&gpu, logits)).unwrap(), first_max(logits), "case {i}");
    }
}

/// Prefill attention's tile stages for the workgroup memory an adapter has: the largest that
/// fit (the fewest barriers per tile), none where a tile cannot fit or a head is not a
/// multiple of 16 up to 256 wide.
#[test]
fn attention_tiles_fit_workgroup_memory() {
    use gloss_engine::gpu::AttentionTiles;
    let stages = |hd, bytes| AttentionTiles::fitting(hd, bytes).map(|t| (t.stage_dims, t.stage_keys));
    // An H100's 48 KiB: whole 64-wide heads in one score stage, a tile's 32 keys in one value stage.
    assert_eq!(stages(64, 48 << 10), Some((64, 32)));
    // Gemma's 256-wide heads: four score stages; value stages of 8 keys (4 words per thread).
    assert_eq!(stages(256, 48 << 10), Some((64, 8)));
    // lavapipe's 32 KiB, and the families test's 18 KiB (two stages of each kind).
    assert_eq!(stages(32, 32 << 10), Some((32, 32)));
    assert_eq!(stages(32, 18 << 10), Some((16, 16)));
    // WebGPU's guaranteed 16 KiB: 64-wide heads in small stages, 256-wide ones not at all;
    // nor heads of 72 or 512 (80 is five score stages of 16).
    assert_eq!(stages(64, 16 << 10), Some((16, 4)));
    assert_eq!(stages(256, 16 << 10), None);
    assert_eq!(stages(80, 48 << 10), Some((16, 16)));
    assert_eq!(stages(72, 48 << 10), None);
    assert_eq!(stages(512, 48 << 10), None);
}
