// rms_norm_i8.wgsl: RMSNorm straight into the int8 codes of a W8A8 layer's
// input (norm + per-token activation quantization in one pass).
//
// For each row: if ADD, x ← x + d (or x + (d + d2) with ADD2), written back;
// o = x · (1 / sqrt(mean(x²) + EPS)) · w, the same f32 operations as
// rms_norm.wgsl; then, as quantize_x_i8.wgsl does for o: s = f32(absmax(o) /
// 127) (1 when 0), q = clamp(roundHalfToEven(o / s), −128, 127) with the
// exact division of i8_codes.wgsl (prepended), Σq for the zero-point term;
// a row holding NaN or ±Inf gets the NaN scale and zero codes. The f32 o is
// never stored: the W8A8 matmul reads only the codes.
// Row selection as rms_norm.wgsl: row g, or with LAST the step's last row.
// Layout: x [n, LDX] f32 (the residual stream); d, d2 [n, LDD] f32; w [DIM]
// f32; qx [rows, LDO / 4] u32, four codes per word (element 4u + e in bits
// [8e, 8e + 8)), columns [DIM, LDO) code 0; xs[row] = (bits of s, Σq as i32).
// Workgroup 256, threads striding over the row. Grid (rows, 1).
// residual() and reduce_sum() are norm_rows.wgsl's (prepended).

struct Step { pos: u32, n: u32, rows: u32, pad: u32 }

override DIM: u32;
override LDX: u32;
override LDD: u32 = 0u;
override LDO: u32;
override EPS: f32;
override ADD: bool = false;
override ADD2: bool = false;
override LAST: bool = false;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> d: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(6) var<storage, read> d2: array<f32>;
@group(0) @binding(8) var<storage, read_write> qx: array<u32>;
@group(0) @binding(9) var<storage, read_write> xs: array<vec2<u32>>;

var<workgroup> absmax: atomic<u32>;
var<workgroup> qsum: atomic<i32>;

@compute @workgroup_size(256)
fn main(
  @builtin(local_invocation_index) t: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let row = select(0u, step.n - 1u, LAST) + wid.x;
  let src = row * LDX;
  var ss = 0.0;
  for (var c = t; c < DIM; c += 256u) {
    let v = residual(row, c);
    ss += v * v;
  }
  let inv = 1.0 / sqrt(reduce_sum(t, ss) / f32(DIM) + EPS);
  var mx = 0u;
  for (var c = t; c < DIM; c += 256u) {
    mx = max(mx, bitcast<u32>(x[src + c] * inv * w[c]) & 0x7fffffffu);
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
  let words = LDO / 4u;
  for (var u = t; u < words; u += 256u) {
    var packed = 0u;
    for (var e = 0u; e < 4u; e++) {
      let c = u * 4u + e;
      var v = 0u;
      if (c < DIM) {
        v = bitcast<u32>(x[src + c] * inv * w[c]);
      }
      var q = code(v, s);
      q = clamp(select(q, -q, v >= 0x80000000u), -128, 127);
      if (!finite) {
        q = 0;
      }
      sum += q;
      packed |= (u32(q) & 0xffu) << (8u * e);
    }
    qx[wid.x * words + u] = packed;
  }
  atomicAdd(&qsum, sum);
  workgroupBarrier();
  if (t == 0u) {
    xs[wid.x] = vec2<u32>(select(NAN, s, finite), bitcast<u32>(atomicLoad(&qsum)));
  }
}
