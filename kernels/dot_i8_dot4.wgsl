// dot_i8_dot4.wgsl: int8 dot product for the W8A8 kernels where WGSL has the
// packed_4x8_integer_dot_product language feature.
//
// dot4i8(a, b) = Σₑ a[e] · b[e] over the four signed bytes of each u32
// (element e in bits [8e, 8e + 8)), exact in i32: one dot4I8Packed (DP4A on
// hardware that has it).
// Prepended to gemv_w8a8.wgsl / gemm_w8a8.wgsl, which fix the workgroup shape.

requires packed_4x8_integer_dot_product;

fn dot4i8(a: u32, b: u32) -> i32 {
  return dot4I8Packed(a, b);
}
