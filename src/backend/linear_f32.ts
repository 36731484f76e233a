/**
 * F32 linear: `y = x @ wᵀ + bias` for float weights (the unquantized layers
 * a model runs beside its quantized ones).
 *
 * The plain reference, {@linkcode referenceLinearF32}, is below; the fast
 * versions differ from it by f32 rounding only:
 * - `linear_f32` in `wasm/kernels.c`: the CPU backend;
 * - `kernels/gemv.wgsl`, `gemm.wgsl` with `load_w_f32.wgsl`: the WebGPU
 *   backend.
 *
 * Checked by `tests/cpu_kernels_test.ts` and `tests/webgpu_test.ts`.
 *
 * @module
 */

import type { F32Weight } from "./backend.ts";

// ---- plain reference

/**
 * Reference f32 linear: `y = x @ wᵀ + bias`.
 *
 * @example
 * ```ts
 * import { referenceLinearF32 } from "./linear_f32.ts";
 * import assert from "node:assert/strict";
 * const w = { data: new Float32Array([1, 2]), n: 1, k: 2 };
 * assert.deepEqual([...referenceLinearF32(new Float32Array([3, 4]), 1, w, new Float32Array([1]))], [12]);
 * ```
 */
export function referenceLinearF32(
  x: Float32Array,
  m: number,
  w: F32Weight,
  bias: Float32Array | null,
): Float32Array {
  const { data, n, k } = w;
  const y = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let t = 0; t < k; t++) {
        acc = Math.fround(acc + Math.fround(x[i * k + t]! * data[j * k + t]!));
      }
      y[i * n + j] = bias ? acc + bias[j]! : acc;
    }
  }
  return y;
}
