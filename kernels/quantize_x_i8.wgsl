// quantize_x_i8.wgsl: per-token int8 quantization of f32 activations (W8A8).
//
// For each row i of x: s = f32(absmax / 127) (1 when that is 0) and
// q = clamp(roundHalfToEven(f32(x / s)), −128, 127), plus Σq for the zero-point
// term. The codes and scales equal the CPU's bit for bit even where a GPU's f32
// division is only accurate to 2.5 ULP or flushes subnormals: the scale is
// divided in integers (div_rn, correctly rounded), and so is x / s wherever
// the float quotient is too close to a half-integer to pick the code, or an
// operand is subnormal. A row holding NaN or ±Inf gets the NaN scale and zero
// codes (every output of the row is then NaN).
// The exact-division helpers (div_rn, code) are i8_codes.wgsl, prepended.
// Layout: x is [m, 16·kb] f32 read as bits; qx is [m, 4·kb] u32, four codes per
// word (element 4u + e in bits [8e, 8e + 8)); xs[i] = (bits of s, Σq as i32).
// Workgroup 256: one workgroup per row, threads striding over the row.
// Grid: (m, 1).

struct Params { n: u32, kb: u32, row0: u32, rows: u32, m: u32 }

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(5) var<uniform> p: Params;
@group(0) @binding(8) var<storage, read_write> qx: array<u32>;
@group(0) @binding(9) var<storage, read_write> xs: array<vec2<u32>>;

var<workgroup> absmax: atomic<u32>;
var<workgroup> qsum: atomic<i32>;

@compute @workgroup_size(256)
fn main(
  @builtin(local_invocation_index) t: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let i = wid.x;
  let words = p.kb * 4u;
  let x0 = i * p.kb * 16u;
  // For finite floats a larger magnitude has larger bits & 0x7fffffff, and
  // NaN / ±Inf sit at or above 0x7f800000: the maximum also finds them.
  var mx = 0u;
  for (var k = t; k < p.kb * 16u; k += 256u) {
    mx = max(mx, x[x0 + k] & 0x7fffffffu);
  }
  atomicMax(&absmax, mx);
  workgroupBarrier();
  let amax = atomicLoad(&absmax);
  let finite = amax < 0x7f800000u;
  var s = div_rn(amax, 0x42fe0000u); // 127.0
  if (s == 0u) {
    s = 0x3f800000u; // 1.0
  }
  var sum = 0;
  for (var u = t; u < words; u += 256u) {
    var packed = 0u;
    for (var e = 0u; e < 4u; e++) {
      let v = x[x0 + u * 4u + e];
      var c = code(v, s);
      c = clamp(select(c, -c, v >= 0x80000000u), -128, 127);
      if (!finite) {
        c = 0;
      }
      sum += c;
      packed |= (u32(c) & 0xffu) << (8u * e);
    }
    qx[i * words + u] = packed;
  }
  atomicAdd(&qsum, sum);
  workgroupBarrier();
  if (t == 0u) {
    xs[i] = vec2<u32>(select(NAN, s, finite), bitcast<u32>(atomicLoad(&qsum)));
  }
}
