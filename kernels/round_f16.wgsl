// round_f16.wgsl: round_act for f16 activations (W8A16 / W4A16 layers of an
// f16 model): v rounded to the nearest f16 and widened back to f32.
//
// Core WGSL (quantizeToF16, no `enable f16`), so it runs on adapters without
// "shader-f16".
// Prepended to the matmul kernels, which fix the workgroup shape.

fn round_act(v: f32) -> f32 {
  return quantizeToF16(v);
}
