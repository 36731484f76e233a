// gemv_int4.wgsl: group-wise int4 matrix × float vector for W4A16 decode
// (M ≤ 8).
//
// Computes y[i, row0 + r] = Σ_g s[r, g] · Σ_{k in g} x[i, k] · (c[r, k] − zp[r, g])
// + bias, in f32, for the weight rows r of one chunk. Nibbles are unpacked in
// registers; each 32-element block's partial sum is scaled by its group's
// scale once (a group holds 1, 2 or 4 blocks).
// Layout: x is [m, 16·kb] read through load_x16 (a load_x_*.wgsl file is
// prepended); w is [rows, 16·kb / 2] bytes, two codes per byte (element 2j in
// the low nibble), read as one vec4<u32> per 32 elements; scales [rows, groups]
// f32; zps [rows, groups] bytes, four per u32 (8 everywhere when symmetric);
// W_GROUP, the group size, is a constant the backend prepends; y is [m, n] f32,
// each value passed through round_act (a round_*.wgsl file, prepended).
// Workgroup 32 × 8: eight weight rows, 32 lanes per row striding over the
// 32-element blocks (512 contiguous weight bytes per row and step); partial
// sums are added by reduce_lanes (gemv_reduce.wgsl, prepended).
// Grid: (ceil(rows / 8), m).

struct Params { n: u32, kb: u32, row0: u32, rows: u32, m: u32 }

@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;
@group(0) @binding(6) var<storage, read> scales: array<f32>;
@group(0) @binding(7) var<storage, read> zps: array<u32>;

alias Acc = f32;
const LO = vec4<u32>(0u, 4u, 8u, 12u);
const HI = vec4<u32>(16u, 20u, 24u, 28u);

// The four codes of a word at shifts `sh`, less the zero point, as f32.
fn nib(q: u32, sh: vec4<u32>, zp: f32) -> vec4<f32> {
  return vec4<f32>((vec4<u32>(q) >> sh) & vec4<u32>(15u)) - zp;
}

@compute @workgroup_size(32, 8)
fn main(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let r = wid.x * ROWS + lid.y;
  let i = wid.y;
  let blocks = p.kb / 2u; // of 32 elements per row
  var acc = 0.0;
  if (r < p.rows) {
    for (var b = lid.x; b < blocks; b += LANES) {
      let g = (r * blocks + b) / (W_GROUP / 32u);
      let zp = f32(extractBits(zps[g / 4u], 8u * (g % 4u), 8u));
      let q = w[r * blocks + b];
      let x0 = load_x16(i * p.kb + 2u * b);
      let x1 = load_x16(i * p.kb + 2u * b + 1u);
      let part = dot(x0[0], nib(q.x, LO, zp)) + dot(x0[1], nib(q.x, HI, zp)) +
        dot(x0[2], nib(q.y, LO, zp)) + dot(x0[3], nib(q.y, HI, zp)) +
        dot(x1[0], nib(q.z, LO, zp)) + dot(x1[1], nib(q.z, HI, zp)) +
        dot(x1[2], nib(q.w, LO, zp)) + dot(x1[3], nib(q.w, HI, zp));
      acc += part * scales[g];
    }
  }
  let sum = reduce_lanes(lid, acc);
  if (lid.x == 0u && r < p.rows) {
    let j = p.row0 + r;
    y[i * p.n + j] = round_act(sum + bias[j]);
  }
}
