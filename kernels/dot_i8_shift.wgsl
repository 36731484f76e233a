// dot_i8_shift.wgsl: int8 dot product for the W8A8 kernels using only core
// WGSL (no packed_4x8_integer_dot_product).
//
// dot4i8(a, b) = Σₑ a[e] · b[e] over the four signed bytes of each u32
// (element e in bits [8e, 8e + 8)), exact in i32: each byte is moved to the
// top of an i32 and shifted back down arithmetically, which sign-extends it.
// Prepended to gemv_w8a8.wgsl / gemm_w8a8.wgsl, which fix the workgroup shape.

fn i8x4(q: u32) -> vec4<i32> {
  let v = bitcast<vec4<i32>>(vec4<u32>(q << 24u, q << 16u, q << 8u, q));
  return v >> vec4<u32>(24u);
}

fn dot4i8(a: u32, b: u32) -> i32 {
  return dot(i8x4(a), i8x4(b));
}
