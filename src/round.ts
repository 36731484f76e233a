/**
 * Round half to even, as `torch.round` and ONNX do (`Math.round` rounds
 * halves up, which is not the same).
 *
 * @module
 */

/**
 * 1.5·2⁵²: `(x + ROUND_MAGIC) − ROUND_MAGIC` is `x` rounded to an integer
 * with the FPU's round-to-nearest-even, for |x| < 2⁵¹. Hot loops inline it
 * (a call per element would halve their speed); everything else calls
 * {@linkcode roundHalfToEven}.
 *
 * @example
 * ```ts
 * import { ROUND_MAGIC } from "./round.ts";
 * import assert from "node:assert/strict";
 * assert.equal((2.5 + ROUND_MAGIC) - ROUND_MAGIC, 2);
 * ```
 */
export const ROUND_MAGIC = 6755399441055744;

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
  return (x + ROUND_MAGIC) - ROUND_MAGIC;
}
