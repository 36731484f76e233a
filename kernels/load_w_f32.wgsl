// load_w_f32.wgsl: weight loader for plain f32 weights (the float Linear).
//
// load_w16(b) returns the 16 f32 values of block b of w as four vec4s.
// Layout: w is row-major [rows, 16·kb] f32, rows zero-padded to a multiple of
// 16; the backend binds scale 1 and zero point 0 for every row.
// Prepended to gemv.wgsl / gemm.wgsl, which fix the workgroup shape.

@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;

fn load_w16(b: u32) -> array<vec4<f32>, 4> {
  let i = b * 4u;
  return array<vec4<f32>, 4>(w[i], w[i + 1u], w[i + 2u], w[i + 3u]);
}
