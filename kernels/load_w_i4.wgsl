// load_w_i4.wgsl: weight loader for group-wise int4 weights (W4A16 prefill).
//
// load_w16(b) returns the 16 weights of block b dequantized to f32,
// (code − zp) · scale, unpacked from two u32 in registers; gemm.wgsl stages
// them in workgroup memory, so each weight is unpacked once per tile.
// Layout: w is row-major [rows, 16·kb / 2] bytes, two codes per byte (element
// 2j in the low nibble); scales [rows, groups] f32; zps [rows, groups] bytes,
// four per u32 (8 everywhere when symmetric); W_GROUP, the group size (a
// multiple of 16, so a block lies in one group), is a constant the backend
// prepends. The backend binds scale 1 and zero point 0 as gemm's per-row values.
// Prepended to gemm.wgsl, which fixes the workgroup shape.

@group(0) @binding(1) var<storage, read> w: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read> scales: array<f32>;
@group(0) @binding(7) var<storage, read> zps: array<u32>;

fn load_w16(b: u32) -> array<vec4<f32>, 4> {
  let g = b / (W_GROUP / 16u);
  let s = scales[g];
  let zp = f32(extractBits(zps[g / 4u], 8u * (g % 4u), 8u));
  let q = w[b];
  let lo = vec4<u32>(0u, 4u, 8u, 12u);
  let hi = vec4<u32>(16u, 20u, 24u, 28u);
  let m = vec4<u32>(15u);
  return array<vec4<f32>, 4>(
    (vec4<f32>((vec4<u32>(q.x) >> lo) & m) - zp) * s,
    (vec4<f32>((vec4<u32>(q.x) >> hi) & m) - zp) * s,
    (vec4<f32>((vec4<u32>(q.y) >> lo) & m) - zp) * s,
    (vec4<f32>((vec4<u32>(q.y) >> hi) & m) - zp) * s,
  );
}
