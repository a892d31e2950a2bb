// Rotary position embedding of one pair, shared by rope_kv.wgsl and attention.wgsl's fused
// decode. Contract with the including kernel: it declares `inv_freq: array<f32>`, where
// `inv_freq[i]` is base^(-2i/n_rot) * freq_scale / factor[i], precomputed on the CPU the way
// llama.cpp does. The NORM layout rotates adjacent pairs (2i, 2i+1); NEOX rotates
// (i, i + n_rot/2).
struct Rotation { i0: u32, i1: u32, c: f32, s: f32 }

const TWO_PI: f32 = 6.283185307179586;

fn rotation(i: u32, pos: u32, n_rot: u32, neox: bool) -> Rotation {
    let theta = f32(pos) * inv_freq[i];
    // sin/cos are only accurate near [-pi, pi] on many GPUs: reduce the angle first.
    let a = theta - TWO_PI * floor(theta / TWO_PI + 0.5);
    if (neox) { return Rotation(i, i + n_rot / 2u, cos(a), sin(a)); }
    return Rotation(2u * i, 2u * i + 1u, cos(a), sin(a));
}

// The pair (x0, x1) rotated by r.
fn rotated(r: Rotation, x0: f32, x1: f32) -> vec2<f32> {
    return vec2<f32>(x0 * r.c - x1 * r.s, x0 * r.s + x1 * r.c);
}
