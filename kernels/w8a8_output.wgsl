// w8a8_output.wgsl: the W8A8 epilogue, shared by gemv_w8a8.wgsl and
// gemm_w8a8.wgsl (prepended to them).
//
// store_w8a8(acc, i, r) writes y[i, row0 + r] = f32(f32(f32(a) · s_x) · s_w) +
// bias with a = acc − zp · Σq_x, the same f32 operations, in the same order, as
// the CPU kernels, so the outputs agree bit for bit:
// - acc and the zero-point term wrap in i32, so a is exact whenever the true
//   sum fits in i32 (k ≤ 65536);
// - f32(a) is rounded to nearest even on every GPU: both halves of a convert
//   exactly and the one f32 addition rounds;
// - the bias is added to the product times p.one (1, from a uniform), so a
//   compiler that fuses the multiply and the add into an FMA cannot skip the
//   product's rounding.
// Layout: xs[i] = (bits of s_x, Σq_x as i32) from quantize_x_i8.wgsl, NaN bits
// for a row that held NaN or ±Inf; rowp[j] = (s_w, zp) per global output row;
// y is [m, n] f32, written as bits.

struct Params { n: u32, kb: u32, row0: u32, rows: u32, m: u32, one: f32 }

@group(0) @binding(2) var<storage, read> rowp: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<u32>;
@group(0) @binding(5) var<uniform> p: Params;
@group(0) @binding(9) var<storage, read> xs: array<vec2<u32>>;

fn store_w8a8(acc: i32, i: u32, r: u32) {
  let j = p.row0 + r;
  let sx = xs[i];
  let a = acc - i32(rowp[j].y) * bitcast<i32>(sx.y);
  let af = f32(a >> 8u) * 256.0 + f32(a & 255);
  let v = af * bitcast<f32>(sx.x) * rowp[j].x;
  let out = bitcast<u32>(v * p.one + bias[j]);
  y[i * p.n + j] = select(out, sx.x, sx.x == 0x7fc00000u);
}
