// norm_rows.wgsl: what the row-norm kernels (rms_norm.wgsl, rms_norm_i8.wgsl,
// layer_norm.wgsl) share, prepended to each of them.
//
// residual(row, c): x[row, c], after adding d[row, c] when ADD (d + d2 with
// ADD2) and writing the sum back into x (the residual stream); it uses the
// including kernel's x, d, d2, LDX, LDD, ADD and ADD2.
// reduce_sum(t, v): Σ v over the workgroup's 256 threads, returned to each,
// by a tree in workgroup memory.
// No bindings; the kernels that include it declare them and use workgroup 256.

var<workgroup> part: array<f32, 256>;

fn residual(row: u32, c: u32) -> f32 {
  let i = row * LDX + c;
  var v = x[i];
  if (ADD) {
    if (ADD2) {
      v += d[row * LDD + c] + d2[row * LDD + c];
    } else {
      v += d[row * LDD + c];
    }
    x[i] = v;
  }
  return v;
}

fn reduce_sum(t: u32, v: f32) -> f32 {
  part[t] = v;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (t < s) {
      part[t] += part[t + s];
    }
    workgroupBarrier();
  }
  let total = part[0];
  workgroupBarrier();
  return total;
}
