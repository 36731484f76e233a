// load_w_f16.wgsl: weight loader for float weights stored as f16, read in
// their stored form through core unpack2x16float (no "shader-f16" needed).
//
// load_w16(b) returns the 16 values of block b widened to f32 (exact).
// Layout: w is row-major [rows, 16·kb] f16 (element 2j in the low half of
// word j), rows zero-padded to a multiple of 16; scale 1, zero point 0.
// Prepended to gemv.wgsl / gemm.wgsl, which fix the workgroup shape.

@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;

fn load_w16(b: u32) -> array<vec4<f32>, 4> {
  let lo = w[b * 2u];
  let hi = w[b * 2u + 1u];
  return array<vec4<f32>, 4>(
    vec4<f32>(unpack2x16float(lo.x), unpack2x16float(lo.y)),
    vec4<f32>(unpack2x16float(lo.z), unpack2x16float(lo.w)),
    vec4<f32>(unpack2x16float(hi.x), unpack2x16float(hi.y)),
    vec4<f32>(unpack2x16float(hi.z), unpack2x16float(hi.w)),
  );
}
