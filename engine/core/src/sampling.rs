//! Sampling settings, the seeded RNG that feeds the GPU sampler its uniforms, penalty
//! bookkeeping, and a CPU reference of the GPU sampler's exact semantics (for tests).

use serde::{Deserialize, Serialize};

use crate::transformer::SampleParams;

/// PCG-XSH-RR 64/32: small, fast, and identical on every target, so a seed reproduces a
/// generation natively and in the browser.
#[derive(Clone)]
pub struct Pcg {
    state: u64,
}

impl Pcg {
    pub fn new(seed: u64) -> Pcg {
        let mut p = Pcg { state: 0 };
        p.next_u32();
        p.state = p.state.wrapping_add(seed ^ 0x853c_49e6_748f_ea9b);
        p.next_u32();
        p
    }
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        xorshifted.rotate_right((old >> 59) as u32)
    }
    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: u32,
    /// 1 disables.
    pub top_p: f32,
    /// 0 disables.
    pub min_p: f32,
    /// 1 disables.
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: usize,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0,
        }
    }
}

impl Sampling {
    pub fn greedy() -> Sampling {
        Sampling { temperature: 0.0, ..Default::default() }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 && !self.has_penalties()
    }

    pub fn has_penalties(&self) -> bool {
        self.penalty_last_n > 0 && (self.repeat_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0)
    }

    /// GPU parameters for one step with uniform `u`. Temperature 0 with penalties is
    /// greedy over the penalized logits (top-k 1).
    pub fn params(&self, u: f32) -> SampleParams {
        let greedy = self.temperature <= 0.0;
        SampleParams {
            top_k: if greedy { 1 } else { self.top_k },
            temperature: if greedy { 1.0 } else { self.temperature },
            top_p: if greedy { 1.0 } else { self.top_p.clamp(0.0, 1.0) },
            min_p: if greedy { 0.0 } else { self.min_p.clamp(0.0, 1.0) },
            u,
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            ..Default::default()
        }
    }

    /// (id, count) of each distinct token among the last `penalty_last_n` of `history`.
    pub fn penalties(&self, history: &[u32]) -> Vec<[u32; 2]> {
        if !self.has_penalties() {
            return Vec::new();
        }
        let recent = &history[history.len().saturating_sub(self.penalty_last_n)..];
        let mut counts: Vec<[u32; 2]> = Vec::new();
        for &t in recent {
            match counts.iter_mut().find(|c| c[0] == t) {
                Some(c) => c[1] += 1,
                None => counts.push([t, 1]),
            }
        }
        counts
    }
}

/// CPU reference of shaders/sample.wgsl's `sample` entry point.
pub fn sample_reference(logits: &[f32], p: &SampleParams, penalties: &[[u32; 2]]) -> u32 {
    let mut l = logits.to_vec();
    for &[id, count] in penalties {
        let v = &mut l[id as usize];
        *v = if *v > 0.0 { *v / p.repeat_penalty } else { *v * p.repeat_penalty };
        *v -= count as f32 * p.frequency_penalty + p.presence_penalty;
    }
    let mx = l.iter().copied().fold(f32::MIN, f32::max);
    let key = |v: f32| (mx - v).max(0.0).to_bits();
    let mut limit = f32::INFINITY.to_bits();
    let mut keys: Vec<u32> = l.iter().map(|&v| key(v)).collect();
    keys.sort_unstable();
    if p.top_k > 0 && (p.top_k as usize) < l.len() {
        limit = keys[p.top_k as usize - 1];
    }
    if p.top_p < 1.0 {
        let mass = |lim: u32| -> f32 { l.iter().filter(|&&v| key(v) <= lim).map(|&v| (v - mx).exp()).sum() };
        let total = mass(limit);
        // Smallest key whose prefix mass reaches top_p (bisection like the GPU).
        let (mut lo, mut hi) = (0u32, limit);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if mass(mid) >= p.top_p * total {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        limit = lo;
    }
    if p.min_p > 0.0 {
        limit = limit.min((-p.min_p.ln()).to_bits());
    }
    let inv_t = 1.0 / p.temperature.max(1e-6);
    let weights: Vec<f32> = l.iter().map(|&v| if key(v) <= limit { ((v - mx) * inv_t).exp() } else { 0.0 }).collect();
    let total: f32 = weights.iter().sum();
    let mut target = p.u * total;
    let mut last = 0;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            last = i;
            if target < w {
                return i as u32;
            }
            target -= w;
        }
    }
    last as u32
}
