// load_x_f16.wgsl: activation loader for f16 activations on devices with the
// "shader-f16" feature (native f16 storage).
//
// load_x16(b) returns the 16 values of block b of x, widened to f32 (exact).
// Layout: x is row-major [m, 16·kb] f16, rows zero-padded to a multiple of 16.
// Prepended to gemv.wgsl / gemm.wgsl, which fix the workgroup shape.

enable f16;

@group(0) @binding(0) var<storage, read> x: array<vec4<f16>>;

fn load_x16(b: u32) -> array<vec4<f32>, 4> {
  let i = b * 4u;
  return array<vec4<f32>, 4>(
    vec4<f32>(x[i]),
    vec4<f32>(x[i + 1u]),
    vec4<f32>(x[i + 2u]),
    vec4<f32>(x[i + 3u]),
  );
}
