// gemm_w8a8.wgsl: tiled int8 matrix × int8 matrixᵀ for W8A8 prefill (M > 8).
//
// Computes acc[i, r] = Σₖ qx[i, k] · w[r, k] exactly in i32 for the weight rows
// r of one chunk with dot4i8 (dot_i8_*.wgsl), then store_w8a8
// (w8a8_output.wgsl) rescales it.
// Layout: qx is [m, 4·kb] and w is [rows, 4·kb] u32, four int8 per word; rows
// zero-padded to 16 elements.
// Workgroup 16 × 16 computes a 64 (x rows) × 64 (weight rows) tile; each thread
// holds a 4 × 4 register tile of i32. Per K step of 64 elements every thread
// stages one vec4<u32> (16 codes) of x and one of w into workgroup memory,
// still packed, word-major, so a thread reads its four rows' words as one
// vec4 and does 16 dot4i8 per two shared loads. Workgroup memory:
// 2 × 16 × 64 × 4 B = 8 KiB. Grid: (ceil(rows / 64), ceil(m / 64)).

@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(8) var<storage, read> qx: array<vec4<u32>>;

const TILE = 64u;
const WORDS = 16u; // per K step

// [WORDS][TILE / 4]: word kk of rows 4g..4g + 3 is one vec4.
var<workgroup> xt: array<vec4<u32>, 256>;
var<workgroup> wt: array<vec4<u32>, 256>;

@compute @workgroup_size(16, 16)
fn main(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) t: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let m0 = wid.y * TILE;
  let n0 = wid.x * TILE;
  // Staging role: tile row sr, 16-element block sb of the 64-wide K step.
  let sr = t >> 2u;
  let sb = t & 3u;
  var acc: array<vec4<i32>, 4>;
  for (var k0 = 0u; k0 < p.kb; k0 += 4u) {
    let blk = k0 + sb;
    var a = vec4<u32>();
    var q = vec4<u32>();
    if (m0 + sr < p.m && blk < p.kb) {
      a = qx[(m0 + sr) * p.kb + blk];
    }
    if (n0 + sr < p.rows && blk < p.kb) {
      q = w[(n0 + sr) * p.kb + blk];
    }
    for (var c = 0u; c < 4u; c++) {
      let at = (sb * 4u + c) * (TILE / 4u) + sr / 4u;
      xt[at][sr % 4u] = a[c];
      wt[at][sr % 4u] = q[c];
    }
    workgroupBarrier();
    for (var kk = 0u; kk < WORDS; kk++) {
      let xa = xt[kk * (TILE / 4u) + lid.y];
      let wb = wt[kk * (TILE / 4u) + lid.x];
      for (var e = 0u; e < 4u; e++) {
        acc[e] += vec4<i32>(
          dot4i8(xa[e], wb.x),
          dot4i8(xa[e], wb.y),
          dot4i8(xa[e], wb.z),
          dot4i8(xa[e], wb.w),
        );
      }
    }
    workgroupBarrier();
  }
  for (var e = 0u; e < 4u; e++) {
    let i = m0 + lid.y * 4u + e;
    if (i < p.m) {
      for (var c = 0u; c < 4u; c++) {
        let r = n0 + lid.x * 4u + c;
        if (r < p.rows) {
          store_w8a8(acc[e][c], i, r);
        }
      }
    }
  }
}
