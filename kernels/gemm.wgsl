// gemm.wgsl: tiled matrix × matrixᵀ for prefill (M > 8 activation rows).
//
// Computes y[i, row0 + r] = scale · Σₖ x[i, k] · (w[r, k] − zp) + bias for the
// weight rows r of one chunk, with (scale, zp) = rowp[row0 + r], f32 accumulation.
// Layout: x is [m, kb] and w is [rows, kb] in blocks of 16 elements, read through
// load_x16 / load_w16 (a load_x_*.wgsl and a load_w_*.wgsl file are prepended);
// rowp, bias and y are indexed by global output row; y is [m, n] f32, each
// value passed through round_act (a round_*.wgsl file, prepended).
// Workgroup 16 × 16 computes a 64 (x rows) × 64 (weight rows) tile; each thread
// holds a 4 × 4 register tile. Per K step of 32, threads 0..127 stage x and
// 128..255 stage dequantized w (zero point already subtracted) into workgroup
// memory as f32, k-major, so every weight is unpacked once per tile, not once
// per multiply. Workgroup memory: 2 × 32 × 64 × 4 B = 16 KiB (the default limit).
// Grid: (ceil(rows / 64), ceil(m / 64)).

struct Params { n: u32, kb: u32, row0: u32, rows: u32, m: u32 }

@group(0) @binding(2) var<storage, read> rowp: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

const TILE = 64u;
const BK = 32u;

// [BK][TILE / 4]: a thread's four rows are one vec4, one 128-bit shared load.
var<workgroup> xs: array<vec4<f32>, 512>;
var<workgroup> ws: array<vec4<f32>, 512>;

@compute @workgroup_size(16, 16)
fn main(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) t: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let m0 = wid.y * TILE;
  let n0 = wid.x * TILE;
  // Staging role: which tile row and which 16-block of the 32-wide K step.
  let sr = (t & 127u) >> 1u;
  let sh = t & 1u;
  let stage_x = t < 128u;
  var zp = 0.0;
  if (!stage_x && n0 + sr < p.rows) {
    zp = rowp[p.row0 + n0 + sr].y;
  }
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < p.kb; k0 += 2u) {
    let blk = k0 + sh;
    // Initialised explicitly: naga does not re-zero a bare `var` per iteration.
    var v = array<vec4<f32>, 4>();
    if (stage_x) {
      if (m0 + sr < p.m && blk < p.kb) {
        v = load_x16((m0 + sr) * p.kb + blk);
      }
    } else if (n0 + sr < p.rows && blk < p.kb) {
      v = load_w16((n0 + sr) * p.kb + blk);
      for (var c = 0u; c < 4u; c++) {
        v[c] -= zp;
      }
    }
    for (var c = 0u; c < 4u; c++) {
      for (var e = 0u; e < 4u; e++) {
        let at = (sh * 16u + c * 4u + e) * (TILE / 4u) + sr / 4u;
        if (stage_x) {
          xs[at][sr % 4u] = v[c][e];
        } else {
          ws[at][sr % 4u] = v[c][e];
        }
      }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let a = xs[kk * (TILE / 4u) + lid.y];
      let b = ws[kk * (TILE / 4u) + lid.x];
      acc[0] += a.x * b;
      acc[1] += a.y * b;
      acc[2] += a.z * b;
      acc[3] += a.w * b;
    }
    workgroupBarrier();
  }
  for (var a = 0u; a < 4u; a++) {
    let i = m0 + lid.y * 4u + a;
    if (i < p.m) {
      for (var c = 0u; c < 4u; c++) {
        let r = n0 + lid.x * 4u + c;
        if (r < p.rows) {
          let j = p.row0 + r;
          y[i * p.n + j] = round_act(acc[a][c] * rowp[j].x + bias[j]);
        }
      }
    }
  }
}
