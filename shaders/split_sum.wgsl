// The sum of a split matmul's column slabs (matmul.wgsl): y[t][out_offset + r] =
// sum_z slabs[z][t][r], plus the bias and the accumulation the matmul itself would have
// applied. One invocation per output; a slab is n_tok rows of `rows` floats.

struct SParams { rows: u32, splits: u32, out_offset: u32, out_stride: u32, flags: u32, _p0: u32, _p1: u32, _p2: u32 }
struct Step { n_tok: u32, pos0: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read> slabs: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<uniform> sp: SParams;
@group(0) @binding(4) var<uniform> step: Step;

#include slab_sum

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 256u;
    let slab = step.n_tok * sp.rows;
    if (i >= slab) { return; }
    var v = slab_sum(i, slab, sp.splits);
    let t = i / sp.rows;
    let o = sp.out_offset + i % sp.rows;
    if ((sp.flags & 2u) != 0u) { v += bias[o]; }
    let yi = t * sp.out_stride + o;
    if ((sp.flags & 1u) != 0u) { v += y[yi]; }
    y[yi] = v;
}
