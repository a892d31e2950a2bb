// RMSNorm over each token's row of length n: out = x / sqrt(mean(x^2) + eps) * weight.
// Flags: 1 = add into y (Gemma's post-norms feed the residual), 2 = then the next norm too
// (Gemma's prefill: a post-norm adds into the residual y, and `normed` gets the new
// residual's norm with weights n..2n, one dispatch for two), 4 = the input is the sum of a
// split matmul's slabs (matmul.wgsl; split_sum.wgsl's work, done here), 8 = raw: the first
// stage adds its input to y without norming it (a split matmul's residual sum), and flag
// 2's norm takes weights 0..n.

struct NParams { n: u32, flags: u32, eps: f32, splits: u32 }
struct Step { n_tok: u32, pos0: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> np: NParams;
@group(0) @binding(4) var<uniform> step: Step;
@group(0) @binding(5) var<storage, read_write> normed: array<f32>;
@group(0) @binding(6) var<storage, read> slabs: array<f32>;

var<workgroup> sums: array<f32, 256>;

#include slab_sum

// The workgroup's sum of s (every invocation calls it).
fn total(s: f32, lid: u32) -> f32 {
    sums[lid] = s;
    workgroupBarrier();
    for (var k = 128u; k > 0u; k >>= 1u) {
        if (lid < k) { sums[lid] += sums[lid + k]; }
        workgroupBarrier();
    }
    let t = sums[0];
    workgroupBarrier();
    return t;
}

fn input(i: u32) -> f32 {
    if ((np.flags & 4u) != 0u) { return slab_sum(i, step.n_tok * np.n, np.splits); }
    return x[i];
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * 65535u;
    if (row >= step.n_tok) { return; } // uniform per workgroup
    let base = row * np.n;
    let raw = (np.flags & 8u) != 0u;
    var inv = 1.0;
    if (!raw) {
        var s = 0.0;
        for (var i = lid; i < np.n; i += 256u) {
            let v = input(base + i);
            s += v * v;
        }
        inv = inverseSqrt(total(s, lid) / f32(np.n) + np.eps);
    }
    var s2 = 0.0;
    for (var i = lid; i < np.n; i += 256u) {
        var v = input(base + i);
        if (!raw) { v *= inv * weight[i]; }
        if ((np.flags & 1u) != 0u) { v += y[base + i]; }
        y[base + i] = v;
        s2 += v * v;
    }
    if ((np.flags & 2u) != 0u) {
        // Each invocation reads back only what it wrote.
        let inv2 = inverseSqrt(total(s2, lid) / f32(np.n) + np.eps);
        let w2 = select(np.n, 0u, raw);
        for (var i = lid; i < np.n; i += 256u) {
            normed[base + i] = y[base + i] * inv2 * weight[w2 + i];
        }
    }
}
