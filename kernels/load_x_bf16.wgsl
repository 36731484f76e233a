// load_x_bf16.wgsl: activation loader for bf16 activations (raw bits).
//
// load_x16(b) returns the 16 values of block b of x, widened to f32 (exact):
// a bf16 is the top half of an f32, so shifting its bits up 16 and bitcasting
// gives the value with no float16 support at all.
// Layout: x is row-major [m, 16·kb] bf16 bits (little-endian: element 2j in the
// low half of word j), rows zero-padded to a multiple of 16.
// Prepended to gemv.wgsl / gemm.wgsl, which fix the workgroup shape.

@group(0) @binding(0) var<storage, read> x: array<vec4<u32>>;

fn bf16x2(w: u32) -> vec2<f32> {
  return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
}

fn load_x16(b: u32) -> array<vec4<f32>, 4> {
  let lo = x[b * 2u];
  let hi = x[b * 2u + 1u];
  return array<vec4<f32>, 4>(
    vec4<f32>(bf16x2(lo.x), bf16x2(lo.y)),
    vec4<f32>(bf16x2(lo.z), bf16x2(lo.w)),
    vec4<f32>(bf16x2(hi.x), bf16x2(hi.y)),
    vec4<f32>(bf16x2(hi.z), bf16x2(hi.w)),
  );
}
