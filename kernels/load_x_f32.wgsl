// load_x_f32.wgsl: activation loader for f32 activations (W8A32, float Linear).
//
// load_x16(b) returns the 16 f32 values of block b of x as four vec4s.
// Layout: x is row-major [m, 16·kb] f32, rows zero-padded to a multiple of 16.
// Prepended to gemv.wgsl / gemm.wgsl, which fix the workgroup shape.

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;

fn load_x16(b: u32) -> array<vec4<f32>, 4> {
  let i = b * 4u;
  return array<vec4<f32>, 4>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
}
