// Gated linear unit: out[t][i] = act(gu[t][i]) * gu[t][n + i], where gu holds each token's
// gate and up projections side by side. act 0 = SiLU (SwiGLU), 1 = tanh-approximated GELU
// (GeGLU, Gemma). Where gate and up are one stacked matrix, the gate/up matvec (decode) and
// tiled matmul (prefill) fuse this instead; it runs for separate gate and up matrices and
// for CPU adapters' untiled matmul.

struct GParams { n: u32, act: u32, _p0: u32, _p1: u32 }
struct Step { n_tok: u32, pos0: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read> gu: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> gp: GParams;
@group(0) @binding(3) var<uniform> step: Step;

#include activation

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 256u;
    if (i >= step.n_tok * gp.n) { return; }
    let t = i / gp.n;
    let c = i % gp.n;
    out[i] = activation(gu[t * 2u * gp.n + c], gp.act) * gu[t * 2u * gp.n + gp.n + c];
}
