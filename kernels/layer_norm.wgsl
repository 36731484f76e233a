// layer_norm.wgsl: LayerNorm of rows (GPT-2, OPT), optionally after adding a
// residual delta (the add + norm fusion saves a pass over the residual stream).
//
// For each row: if ADD, x ← x + d (written back: x is the residual stream),
// or with ADD2 x ← x + (d + d2) (a parallel block's attention and MLP);
// then out = (x − mean) / sqrt(var + EPS) · w + b with the biased variance,
// f32, mean and variance in two passes (exact-ish, no E[x²] − E[x]²).
// Row selection: workgroup g handles source row g and writes output row g;
// with LAST, one workgroup normalises the step's last row only (into row 0).
// Layout: x [n, LDX] f32 (the residual stream); d, d2 [n, LDD] f32; w, b [DIM]
// f32; out [·, LDO] f32, columns [DIM, LDO) zeroed. Workgroup 256, threads striding over the row; sums
// reduced in workgroup memory. Grid (rows, 1).
// residual() and reduce_sum() are norm_rows.wgsl's (prepended).

struct Step { pos: u32, n: u32, rows: u32, pad: u32 }

override DIM: u32;
override LDX: u32;
override LDD: u32 = 0u;
override LDO: u32;
override EPS: f32;
override ADD: bool = false;
override LAST: bool = false;
override ADD2: bool = false;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> d: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> b: array<f32>;
@group(0) @binding(6) var<storage, read> d2: array<f32>;

@compute @workgroup_size(256)
fn main(
  @builtin(local_invocation_index) t: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let row = select(0u, step.n - 1u, LAST) + wid.x;
  let src = row * LDX;
  let dst = wid.x * LDO;
  var s1 = 0.0;
  for (var c = t; c < DIM; c += 256u) {
    let v = residual(row, c);
    s1 += v;
  }
  let mean = reduce_sum(t, s1) / f32(DIM);
  var s2 = 0.0;
  for (var c = t; c < DIM; c += 256u) {
    let v = x[src + c] - mean;
    s2 += v * v;
  }
  let inv = 1.0 / sqrt(reduce_sum(t, s2) / f32(DIM) + EPS);
  for (var c = t; c < LDO; c += 256u) {
    var o = 0.0;
    if (c < DIM) {
      o = (x[src + c] - mean) * inv * w[c] + b[c];
    }
    out[dst + c] = o;
  }
}
