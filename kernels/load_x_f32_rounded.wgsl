// load_x_f32_rounded.wgsl: activation loader for f32 activations that a
// 16-bit-activation layer (W8A16, W4A16) reads as bf16 or f16.
//
// load_x16(b) returns the 16 values of block b of x, each through round_act
// (a round_*.wgsl file, prepended): the engine keeps one f32 stream and
// rounds on load what the CPU runtime converts before such a layer.
// Layout: x is row-major [m, 16·kb] f32, rows zero-padded to a multiple of 16.
// Prepended to gemv.wgsl / gemm.wgsl / gemv_int4.wgsl, which fix the
// workgroup shape.

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;

fn r4(v: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(round_act(v.x), round_act(v.y), round_act(v.z), round_act(v.w));
}

fn load_x16(b: u32) -> array<vec4<f32>, 4> {
  let i = b * 4u;
  return array<vec4<f32>, 4>(r4(x[i]), r4(x[i + 1u]), r4(x[i + 2u]), r4(x[i + 3u]));
}
