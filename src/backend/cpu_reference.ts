/**
 * Plain typed-array kernels: the reference every fast kernel (CPU or WebGPU)
 * is checked against. Written for clarity, not speed.
 *
 * @module
 */

import type { F32Weight, Int8Weight } from "./backend.ts";

/**
 * Reference int8 linear: `y[i, j] = Σₖ x[i, k] · (q[j, k] − zp[j]) · scale[j] + bias[j]`,
 * accumulating `x · (q − zp)` in f32 and scaling once per output.
 *
 * @example
 * ```ts
 * import { referenceLinearInt8 } from "./cpu_reference.ts";
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

/**
 * Reference f32 linear: `y = x @ wᵀ + bias`.
 *
 * @example
 * ```ts
 * import { referenceLinearF32 } from "./cpu_reference.ts";
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
