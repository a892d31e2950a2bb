// Dequantization of the GPU weight layout (see engine/core/src/quant.rs).
// Contract with the including kernel: it declares `w: array<u32>` (the weight buffer) and
// `wp` with fields `k` (row length) and `scale_base` (word offset of the separated f16
// scales). Each `load4_*` returns the 4 weights of row `r` at columns k..k+3 (k % 4 == 0).
// The kernel prepends `alias`-style glue: `fn load4(r, k) { return load4_<type>(r, k); }`.

fn f16_scale(blk: u32) -> f32 {
    return unpack2x16float(w[wp.scale_base + (blk >> 1u)])[blk & 1u];
}

// The four nibbles at bit `shift` of each byte of `word`. Kernels convert integers to float
// once per weight: where a weight has high bits elsewhere (Q5_0, Q5_K, Q6_K) they are OR-ed
// in first, since the conversion runs at a quarter of the arithmetic rate on NVIDIA GPUs.
fn nibbles(word: u32, shift: u32) -> vec4<u32> {
    return (vec4<u32>(word) >> vec4<u32>(shift, shift + 8u, shift + 16u, shift + 24u)) & vec4<u32>(0xFu);
}

// Bits `bit`, `bit` + 8, + 16, + 24 of `word`, each moved to bit 4.
fn high_bits4(word: u32, bit: u32) -> vec4<u32> {
    return ((vec4<u32>(word) >> vec4<u32>(bit, bit + 8u, bit + 16u, bit + 24u)) & vec4<u32>(1u)) << vec4<u32>(4u);
}

fn load4_f32(r: u32, k: u32) -> vec4<f32> {
    let i = r * wp.k + k;
    return vec4<f32>(bitcast<f32>(w[i]), bitcast<f32>(w[i + 1u]), bitcast<f32>(w[i + 2u]), bitcast<f32>(w[i + 3u]));
}

fn load4_f16(r: u32, k: u32) -> vec4<f32> {
    let i = (r * wp.k + k) >> 1u;
    return vec4<f32>(unpack2x16float(w[i]), unpack2x16float(w[i + 1u]));
}

fn bf16_pair(word: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xFFFF0000u));
}

fn load4_bf16(r: u32, k: u32) -> vec4<f32> {
    let i = (r * wp.k + k) >> 1u;
    return vec4<f32>(bf16_pair(w[i]), bf16_pair(w[i + 1u]));
}

// Q4_0: body = qs[16] (4 words); element e<16 is the low nibble of qs[e], else the high
// nibble of qs[e-16]; value = (q - 8) * d.
fn load4_q4_0(r: u32, k: u32) -> vec4<f32> {
    let blk = (r * wp.k + k) >> 5u;
    let e = k & 31u;
    let word = w[blk * 4u + ((e & 15u) >> 2u)];
    return (vec4<f32>(nibbles(word, (e >> 4u) * 4u)) - 8.0) * f16_scale(blk);
}

// Q4_1: body = d|m<<16, qs[16]; value = q * d + m.
fn load4_q4_1(r: u32, k: u32) -> vec4<f32> {
    let blk = (r * wp.k + k) >> 5u;
    let e = k & 31u;
    let dm = unpack2x16float(w[blk * 5u]);
    let word = w[blk * 5u + 1u + ((e & 15u) >> 2u)];
    return vec4<f32>(nibbles(word, (e >> 4u) * 4u)) * dm.x + dm.y;
}

// Q5_0: body = qh (bit e = 5th bit of element e), qs[16]; value = (q - 16) * d.
fn load4_q5_0(r: u32, k: u32) -> vec4<f32> {
    let blk = (r * wp.k + k) >> 5u;
    let e = k & 31u;
    let qh = w[blk * 5u];
    let word = w[blk * 5u + 1u + ((e & 15u) >> 2u)];
    let hb = ((vec4<u32>(qh) >> vec4<u32>(e, e + 1u, e + 2u, e + 3u)) & vec4<u32>(1u)) << vec4<u32>(4u);
    return (vec4<f32>(nibbles(word, (e >> 4u) * 4u) | hb) - 16.0) * f16_scale(blk);
}

// Q8_0: body = qs[32] as signed bytes; value = q * d.
fn load4_q8_0(r: u32, k: u32) -> vec4<f32> {
    let blk = (r * wp.k + k) >> 5u;
    let word = w[blk * 8u + ((k & 31u) >> 2u)];
    let q = vec4<i32>(bitcast<i32>(word << 24u), bitcast<i32>(word << 16u), bitcast<i32>(word << 8u), bitcast<i32>(word)) >> vec4<u32>(24u);
    return vec4<f32>(q) * f16_scale(blk);
}

// K-quant 6-bit (scale, min) of sub-block j from the 12 packed scale bytes at word `base`.
fn scale_min_k4(base: u32, j: u32) -> vec2<f32> {
    let byte_at = (base * 4u);
    var sc: u32;
    var mn: u32;
    if (j < 4u) {
        sc = kbyte(byte_at + j) & 63u;
        mn = kbyte(byte_at + j + 4u) & 63u;
    } else {
        sc = (kbyte(byte_at + j + 4u) & 0xFu) | ((kbyte(byte_at + j - 4u) >> 6u) << 4u);
        mn = (kbyte(byte_at + j + 4u) >> 4u) | ((kbyte(byte_at + j) >> 6u) << 4u);
    }
    return vec2<f32>(f32(sc), f32(mn));
}

fn kbyte(byte_index: u32) -> u32 {
    return (w[byte_index >> 2u] >> ((byte_index & 3u) * 8u)) & 0xFFu;
}

// Q4_K: body = d|dmin<<16, scales[12], qs[128] (36 words). Element e: 64-chunk c, half h,
// lane l; nibble h of qs[32c + l]; value = d*sc*q - dmin*m with (sc, m) of sub-block 2c+h.
fn load4_q4_k(r: u32, k: u32) -> vec4<f32> {
    let blk = (r * wp.k + k) >> 8u;
    let e = k & 255u;
    let c = e >> 6u;
    let h = (e >> 5u) & 1u;
    let l = e & 31u;
    let base = blk * 36u;
    let dm = unpack2x16float(w[base]);
    let sm = scale_min_k4(base + 1u, 2u * c + h);
    let word = w[base + 4u + 8u * c + (l >> 2u)];
    return vec4<f32>(nibbles(word, 4u * h)) * (dm.x * sm.x) - dm.y * sm.y;
}

// Q5_K: body = d|dmin<<16, scales[12], qh[32], qs[128] (44 words); as Q4_K plus a 5th bit
// from bit 2c+h of qh[l].
fn load4_q5_k(r: u32, k: u32) -> vec4<f32> {
    let blk = (r * wp.k + k) >> 8u;
    let e = k & 255u;
    let c = e >> 6u;
    let h = (e >> 5u) & 1u;
    let l = e & 31u;
    let base = blk * 44u;
    let dm = unpack2x16float(w[base]);
    let sm = scale_min_k4(base + 1u, 2u * c + h);
    let word = w[base + 12u + 8u * c + (l >> 2u)];
    let hw = w[base + 4u + (l >> 2u)];
    return vec4<f32>(nibbles(word, 4u * h) | high_bits4(hw, 2u * c + h)) * (dm.x * sm.x) - dm.y * sm.y;
}

// Q6_K: body = ql[128], qh[64], scales[16] (i8) (52 words), d separated. Element e: half
// nh, quarter g, lane l; low 4 bits from ql[64nh + l + 32(g&1)] (nibble g>>1), high 2 bits
// from qh[32nh + l] (bits 2g), scale sc[8nh + l/16 + 2g]; value = d * sc * (q - 32).
fn load4_q6_k(r: u32, k: u32) -> vec4<f32> {
    let blk = (r * wp.k + k) >> 8u;
    let e = k & 255u;
    let nh = e >> 7u;
    let g = (e >> 5u) & 3u;
    let l = e & 31u;
    let base = blk * 52u;
    let lo = nibbles(w[base + 16u * nh + 8u * (g & 1u) + (l >> 2u)], 4u * (g >> 1u));
    let hw = w[base + 32u + 8u * nh + (l >> 2u)] >> (2u * g);
    let hi = ((vec4<u32>(hw) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(3u)) << vec4<u32>(4u);
    let sbyte = 8u * nh + (l >> 4u) + 2u * g;
    let sc = f32(bitcast<i32>(((w[base + 48u + (sbyte >> 2u)] >> ((sbyte & 3u) * 8u)) & 0xFFu) << 24u) >> 24u);
    return (vec4<f32>(lo | hi) - 32.0) * (sc * f16_scale(blk));
}
