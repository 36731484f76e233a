// load_w_i8_shift.wgsl: weight loader for int8 weights using only core WGSL
// (no packed_4x8_integer_dot_product).
//
// load_w16(b) returns the 16 int8 values of block b of w as f32, one 128-bit
// load; each byte is moved to the top of an i32 and shifted back down
// arithmetically, which sign-extends it.
// Layout: w is row-major [rows, 16·kb] int8, four per u32 (element k of a group
// of four in bits [8k, 8k + 8)), rows zero-padded to a multiple of 16.
// Prepended to gemv.wgsl / gemm.wgsl, which fix the workgroup shape.

@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;

fn i8x4(q: u32) -> vec4<f32> {
  let v = bitcast<vec4<i32>>(vec4<u32>(q << 24u, q << 16u, q << 8u, q));
  return vec4<f32>(v >> vec4<u32>(24u));
}

fn load_w16(b: u32) -> array<vec4<f32>, 4> {
  let q = w[b];
  return array<vec4<f32>, 4>(i8x4(q.x), i8x4(q.y), i8x4(q.z), i8x4(q.w));
}
