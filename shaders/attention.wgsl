// Causal attention over the KV cache, one workgroup per (query head, query token), with an
// online softmax over chunks of 128 keys so memory use does not grow with the context.
// Grouped-query attention maps query head h to kv head h / (n_head / n_kv). `window` > 0
// limits each query to its last `window` positions (Gemma's sliding-window layers).

struct AParams { n_head: u32, n_kv: u32, head_dim: u32, window: u32, scale: f32, _p0: u32, _p1: u32, _p2: u32 }
struct Step { n_tok: u32, pos0: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k_cache: array<u32>;
@group(0) @binding(2) var<storage, read> v_cache: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> ap: AParams;
@group(0) @binding(5) var<uniform> step: Step;

const WG: u32 = 128u;
const MAX_HEAD_DIM: u32 = 256u;
var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> p: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

fn reduce_max(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t = wid.y;
    let hd = ap.head_dim;
    let kvh = h / (ap.n_head / ap.n_kv);
    let kv_words = ap.n_kv * hd / 2u;
    let pos = step.pos0 + t;
    var start = 0u;
    if (ap.window > 0u && pos + 1u > ap.window) { start = pos + 1u - ap.window; }
    let qb = (t * ap.n_head + h) * hd;
    for (var d = lid; d < hd; d += WG) { qs[d] = q[qb + d] * ap.scale; }
    workgroupBarrier();

    var m = -3.0e38;
    var l = 0.0;
    var acc0 = 0.0; // dims lid and lid + WG
    var acc1 = 0.0;
    for (var c = start; c <= pos; c += WG) {
        let j = c + lid;
        var s = -3.0e38;
        if (j <= pos) {
            let kb = j * kv_words + kvh * hd / 2u;
            var dotv = 0.0;
            for (var d = 0u; d < hd; d += 2u) {
                let kk = unpack2x16float(k_cache[kb + d / 2u]);
                dotv += qs[d] * kk.x + qs[d + 1u] * kk.y;
            }
            s = dotv;
        }
        let m_new = max(m, reduce_max(s, lid));
        var e = 0.0;
        if (j <= pos) { e = exp(s - m_new); }
        p[lid] = e;
        let corr = exp(m - m_new);
        l = l * corr + reduce_sum(e, lid);
        m = m_new;
        acc0 *= corr;
        acc1 *= corr;
        let n = min(WG, pos + 1u - c);
        for (var jj = 0u; jj < n; jj++) {
            let vb = (c + jj) * kv_words + kvh * hd / 2u;
            let pj = p[jj];
            if (lid < hd) { acc0 += pj * unpack2x16float(v_cache[vb + lid / 2u])[lid & 1u]; }
            if (lid + WG < hd) { acc1 += pj * unpack2x16float(v_cache[vb + (lid + WG) / 2u])[lid & 1u]; }
        }
        workgroupBarrier();
    }
    let ob = (t * ap.n_head + h) * hd;
    if (lid < hd) { out[ob + lid] = acc0 / l; }
    if (lid + WG < hd) { out[ob + lid + WG] = acc1 / l; }
}
