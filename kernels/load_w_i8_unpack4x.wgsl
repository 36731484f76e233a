// load_w_i8_unpack4x.wgsl: weight loader for int8 weights where WGSL has the
// packed_4x8_integer_dot_product language feature.
//
// load_w16(b) returns the 16 int8 values of block b of w as f32, one 128-bit
// load unpacked by unpack4xI8 (sign-extending). dot4I8Packed is not used: the
// activations are float, and quantizing them to int8 would change the results.
// Layout: w is row-major [rows, 16·kb] int8, four per u32 (element k of a group
// of four in bits [8k, 8k + 8)), rows zero-padded to a multiple of 16.
// Prepended to gemv.wgsl / gemm.wgsl, which fix the workgroup shape.

requires packed_4x8_integer_dot_product;

@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;

fn load_w16(b: u32) -> array<vec4<f32>, 4> {
  let q = w[b];
  return array<vec4<f32>, 4>(
    vec4<f32>(unpack4xI8(q.x)),
    vec4<f32>(unpack4xI8(q.y)),
    vec4<f32>(unpack4xI8(q.z)),
    vec4<f32>(unpack4xI8(q.w)),
  );
}
