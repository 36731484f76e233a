// load_w_bf16.wgsl: weight loader for float weights stored as bf16 (a bf16
// checkpoint's Linear layers and tied LM head), read in their stored form.
//
// load_w16(b) returns the 16 values of block b widened to f32 (exact): a bf16
// is the top half of an f32. Half the bytes of an f32 copy, so half the
// memory traffic of a decode step.
// Layout: w is row-major [rows, 16·kb] bf16 bits (element 2j in the low half
// of word j), rows zero-padded to a multiple of 16; scale 1, zero point 0.
// Prepended to gemv.wgsl / gemm.wgsl, which fix the workgroup shape.

@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;

fn wbf16x2(q: u32) -> vec2<f32> {
  return vec2<f32>(bitcast<f32>(q << 16u), bitcast<f32>(q & 0xffff0000u));
}

fn load_w16(b: u32) -> array<vec4<f32>, 4> {
  let lo = w[b * 2u];
  let hi = w[b * 2u + 1u];
  return array<vec4<f32>, 4>(
    vec4<f32>(wbf16x2(lo.x), wbf16x2(lo.y)),
    vec4<f32>(wbf16x2(lo.z), wbf16x2(lo.w)),
    vec4<f32>(wbf16x2(hi.x), wbf16x2(hi.y)),
    vec4<f32>(wbf16x2(hi.z), wbf16x2(hi.w)),
  );
}
