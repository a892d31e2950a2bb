// Token embedding lookup: out[t] = dequant(W[ids[t]]) * scale. Each weight part writes the
// tokens whose id falls in its row range, so split tensors need no CPU-side routing.

struct EParams { k: u32, row0: u32, rows: u32, scale_base: u32, scale: f32, _p0: u32, _p1: u32, _p2: u32 }
struct Step { n_tok: u32, pos0: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> wp: EParams;
@group(0) @binding(4) var<uniform> step: Step;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.y;
    let i = gid.x;
    if (t >= step.n_tok || i >= wp.k / 4u) { return; }
    let id = ids[t];
    if (id < wp.row0 || id >= wp.row0 + wp.rows) { return; }
    out[t * (wp.k / 4u) + i] = load4(id - wp.row0, i * 4u) * wp.scale;
}
