// round_bf16.wgsl: round_act for bf16 activations (W8A16 / W4A16 layers of a
// bf16 model): v rounded to the nearest bf16, ties to even, returned as f32.
//
// The model engine keeps activations in f32 and rounds where the CPU runtime
// converts to and from the layer's 16-bit dtype, so both round the same
// values. Bits: add 0x7fff plus the lowest kept bit, clear the low half
// (finite values; NaN stays NaN).
// Prepended to the matmul kernels, which fix the workgroup shape.

fn round_act(v: f32) -> f32 {
  let b = bitcast<u32>(v);
  if ((b & 0x7fffffffu) > 0x7f800000u) {
    return v;
  }
  return bitcast<f32>((b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u);
}
