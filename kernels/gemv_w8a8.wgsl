// gemv_w8a8.wgsl: int8 matrix × int8 vector for W8A8 decode (M ≤ 8).
//
// Computes acc[i, r] = Σₖ qx[i, k] · w[r, k] exactly in i32 for the weight rows
// r of one chunk with dot4i8 (dot_i8_*.wgsl), then store_w8a8
// (w8a8_output.wgsl) rescales it.
// Layout: qx is [m, 4·kb] and w is [rows, 4·kb] u32, four int8 per word, read
// 16 elements (one vec4<u32>) at a time; rows zero-padded to 16 elements.
// Workgroup 32 × 8: eight weight rows, 32 lanes per row striding over K, so a
// row's lanes read 512 contiguous bytes per step; the lanes' partial sums are
// added by reduce_lanes (gemv_reduce.wgsl, prepended; wrapping i32, exact).
// Grid: (ceil(rows / 8), m).

@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(8) var<storage, read> qx: array<vec4<u32>>;

alias Acc = i32;

@compute @workgroup_size(32, 8)
fn main(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let r = wid.x * ROWS + lid.y;
  let i = wid.y;
  var acc = 0;
  if (r < p.rows) {
    for (var b = lid.x; b < p.kb; b += LANES) {
      let a = qx[i * p.kb + b];
      let q = w[r * p.kb + b];
      acc += dot4i8(a.x, q.x) + dot4i8(a.y, q.y) + dot4i8(a.z, q.z) +
        dot4i8(a.w, q.w);
    }
  }
  let sum = reduce_lanes(lid, acc);
  if (lid.x == 0u && r < p.rows) {
    store_w8a8(sum, i, r);
  }
}
