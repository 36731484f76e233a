// gemv_reduce.wgsl: the lane reduction of the GEMV kernels (gemv.wgsl,
// gemv_int4.wgsl, gemv_w8a8.wgsl), prepended to them.
//
// reduce_lanes(lid, acc) adds the partial sums of the 32 lanes (lid.x) of each
// of the workgroup's eight weight rows (lid.y) in workgroup memory, so no
// subgroup ops are needed, and returns the row's total to lane 0. It holds
// barriers: every invocation of the workgroup must call it. Acc, the type of
// the sums (f32, or i32 wrapping exactly), is an alias the kernel declares.
// Workgroup: 32 × 8, as the kernels declare.

const LANES = 32u;
const ROWS = 8u;

var<workgroup> partial: array<Acc, 256>;

fn reduce_lanes(lid: vec3<u32>, acc: Acc) -> Acc {
  let slot = lid.y * LANES + lid.x;
  partial[slot] = acc;
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lid.x < s) {
      partial[slot] += partial[slot + s];
    }
    workgroupBarrier();
  }
  return partial[slot];
}
