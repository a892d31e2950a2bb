// Rotary position embedding, in place on [n_tok][n_heads][head_dim]. `inv_freq[i]` is
// base^(-2i/n_rot) * freq_scale / factor[i], precomputed on the CPU the way llama.cpp does.
// NORM rotates adjacent pairs (2i, 2i+1); NEOX rotates (i, i + n_rot/2).

struct RParams { n_heads: u32, head_dim: u32, n_rot: u32, neox: u32 }
struct Step { n_tok: u32, pos0: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read_write> v: array<f32>;
@group(0) @binding(1) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(2) var<uniform> rp: RParams;
@group(0) @binding(3) var<uniform> step: Step;

const TWO_PI: f32 = 6.283185307179586;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = rp.n_rot / 2u;
    let t = gid.y;
    if (t >= step.n_tok || gid.x >= rp.n_heads * half) { return; }
    let h = gid.x / half;
    let i = gid.x % half;
    let theta = f32(step.pos0 + t) * inv_freq[i];
    // sin/cos are only accurate near [-pi, pi] on many GPUs: reduce the angle first.
    let a = theta - TWO_PI * floor(theta / TWO_PI + 0.5);
    let c = cos(a);
    let s = sin(a);
    let base = (t * rp.n_heads + h) * rp.head_dim;
    var i0 = base + 2u * i;
    var i1 = i0 + 1u;
    if (rp.neox != 0u) {
        i0 = base + i;
        i1 = i0 + half;
    }
    let x0 = v[i0];
    let x1 = v[i1];
    v[i0] = x0 * c - x1 * s;
    v[i1] = x0 * s + x1 * c;
}
