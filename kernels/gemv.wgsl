// gemv.wgsl: matrix × vector for decode (a few activation rows, M ≤ 8).
//
// Computes y[i, row0 + r] = scale · Σₖ x[i, k] · (w[r, k] − zp) + bias for the
// weight rows r of one chunk, with (scale, zp) = rowp[row0 + r], f32 accumulation.
// Layout: x is [m, kb] and w is [rows, kb] in blocks of 16 elements, read through
// load_x16 / load_w16 (a load_x_*.wgsl and a load_w_*.wgsl file are prepended);
// rowp, bias and y are indexed by global output row; y is [m, n] f32, each
// value passed through round_act (a round_*.wgsl file: identity, or rounding
// to the bf16/f16 that the 16-bit-activation layers return).
// Workgroup 32 × 8: eight weight rows, 32 lanes per row striding over K so that
// a row's lanes read 512 contiguous bytes of int8 weights per step; the lanes'
// partial sums are added by reduce_lanes (gemv_reduce.wgsl, prepended).
// Grid: (ceil(rows / 8), m).

struct Params { n: u32, kb: u32, row0: u32, rows: u32, m: u32 }

@group(0) @binding(2) var<storage, read> rowp: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

alias Acc = f32;

@compute @workgroup_size(32, 8)
fn main(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let r = wid.x * ROWS + lid.y;
  let i = wid.y;
  var acc = 0.0;
  if (r < p.rows) {
    let zp = rowp[p.row0 + r].y;
    for (var b = lid.x; b < p.kb; b += LANES) {
      let xv = load_x16(i * p.kb + b);
      let wv = load_w16(r * p.kb + b);
      acc += dot(xv[0], wv[0] - zp) + dot(xv[1], wv[1] - zp) +
        dot(xv[2], wv[2] - zp) + dot(xv[3], wv[3] - zp);
    }
  }
  let sum = reduce_lanes(lid, acc);
  if (lid.x == 0u && r < p.rows) {
    let j = p.row0 + r;
    y[i * p.n + j] = round_act(sum * rowp[j].x + bias[j]);
  }
}
