// round_f32.wgsl: round_act for f32 activations: the identity.
//
// The matmul kernels (gemv, gemm, gemv_int4) pass each output through
// round_act, and load_x_f32_rounded.wgsl each input; this file keeps f32.
// Prepended to those kernels, which fix the workgroup shape.

fn round_act(v: f32) -> f32 {
  return v;
}
