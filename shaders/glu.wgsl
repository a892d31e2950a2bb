// Gated linear unit, in place: gate[i] = act(gate[i]) * up[i]. act 0 = SiLU (SwiGLU),
// 1 = tanh-approximated GELU (GeGLU, Gemma).

struct GParams { n: u32, act: u32, _p0: u32, _p1: u32 }
struct Step { n_tok: u32, pos0: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read_write> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<uniform> gp: GParams;
@group(0) @binding(3) var<uniform> step: Step;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 256u;
    if (i >= step.n_tok * gp.n) { return; }
    let g = gate[i];
    var a: f32;
    if (gp.act == 0u) {
        a = g / (1.0 + exp(-g));
    } else {
        let inner = 0.7978845608028654 * (g + 0.044715 * g * g * g);
        // tanh via exp, clamped: WGSL's tanh may overflow to NaN for large inputs.
        let e = exp(-2.0 * abs(inner));
        let th = sign(inner) * (1.0 - e) / (1.0 + e);
        a = 0.5 * g * (1.0 + th);
    }
    gate[i] = a * up[i];
}
