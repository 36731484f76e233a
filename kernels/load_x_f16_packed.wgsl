// load_x_f16_packed.wgsl: activation loader for f16 activations on devices
// without "shader-f16": the same bytes, read as u32 pairs of halves.
//
// load_x16(b) returns the 16 values of block b of x, widened to f32 (exact) by
// the core builtin unpack2x16float, which needs no `enable f16`.
// Layout: x is row-major [m, 16·kb] f16 (little-endian: element 2j in the low
// half of word j), rows zero-padded to a multiple of 16.
// Prepended to gemv.wgsl / gemm.wgsl, which fix the workgroup shape.

@group(0) @binding(0) var<storage, read> x: array<vec4<u32>>;

fn load_x16(b: u32) -> array<vec4<f32>, 4> {
  let lo = x[b * 2u];
  let hi = x[b * 2u + 1u];
  return array<vec4<f32>, 4>(
    vec4<f32>(unpack2x16float(lo.x), unpack2x16float(lo.y)),
    vec4<f32>(unpack2x16float(lo.z), unpack2x16float(lo.w)),
    vec4<f32>(unpack2x16float(hi.x), unpack2x16float(hi.y)),
    vec4<f32>(unpack2x16float(hi.z), unpack2x16float(hi.w)),
  );
}
