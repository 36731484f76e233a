/**
 * Int8 linear (W8A32 and W8A16): float activations times int8 weights with
 * one scale (and zero point) per output.
 *
 * The plain reference, {@linkcode referenceLinearInt8}, is below, written for
 * clarity, not speed; the fast versions differ from it by f32 rounding only
 * (they sum in a blocked order):
 * - `linear_i8` in `wasm/kernels.c` (gemv/gemm paths; `widen_rows` for f16
 *   and bf16 activations): the CPU backend;
 * - `kernels/gemv.wgsl`, `gemv_reduce.wgsl`, `gemm.wgsl` with
 *   `load_w_i8_*.wgsl` and `load_x_*.wgsl`: the WebGPU backend.
 *
 * Checked by `tests/cpu_kernels_test.ts` and `tests/webgpu_test.ts`.
 *
 * @module
 */

import type { Int8Weight } from "./backend.ts";

// ---- plain reference

/**
 * Reference int8 linear: `y[i, j] = Σₖ x[i, k] · (q[j, k] − zp[j]) · scale[j] + bias[j]`,
 * accumulating `x · (q − zp)` in f32 and scaling once per output.
 *
 * @example
 * ```ts
 * import { referenceLinearInt8 } from "./linear_int8.ts";
 * import assert from "node:assert/strict";
 * const w = { q: new Int8Array([1, 2]), scales: new Float32Array([0.5]), zeroPoints: null, n: 1, k: 2 };
 * assert.deepEqual([...referenceLinearInt8(new Float32Array([3, 4]), 1, w, null)], [5.5]);
 * ```
 */
export function referenceLinearInt8(
  x: Float32Array,
  m: number,
  w: Int8Weight,
  bias: Float32Array | null,
): Float32Array {
  const { q, scales, zeroPoints, n, k } = w;
  const y = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      const zp = zeroPoints ? zeroPoints[j]! : 0;
      let acc = 0;
      for (let t = 0; t < k; t++) {
        acc = Math.fround(
          acc + Math.fround(x[i * k + t]! * (q[j * k + t]! - zp)),
        );
      }
      const scaled = Math.fround(acc * scales[j]!);
      y[i * n + j] = bias ? scaled + bias[j]! : scaled;
    }
  }
  return y;
}
