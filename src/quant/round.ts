/**
 * Round half to even, as `torch.round` and ONNX do (`Math.round` rounds
 * halves up, which is not the same).
 *
 * @module
 */

// 1.5·2⁵²: adding and subtracting it leaves a double rounded to an integer
// with the FPU's round-to-nearest-even, for |x| < 2⁵¹.
const MAGIC = 6755399441055744;

/**
 * Rounds to the nearest integer, ties to even.
 *
 * @example
 * ```ts
 * import { roundHalfToEven } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.deepEqual([0.5, 1.5, 2.5, -2.5].map(roundHalfToEven), [0, 2, 2, -2]);
 * ```
 */
export function roundHalfToEven(x: number): number {
  if (!(Math.abs(x) < 2 ** 51)) return x; // already integral, or NaN/±Inf
  return (x + MAGIC) - MAGIC;
}
