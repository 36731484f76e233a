/**
 * The quantization methods a checkpoint records and how each stores its
 * weights: {@linkcode CheckpointMethod} and {@linkcode weightSchemeOf}.
 *
 * @module
 */

import { DEFAULT_INT4_GROUP_SIZE } from "../quant/int4.ts";
import type { WeightScheme } from "./formats/format.ts";

/**
 * The quantization methods a checkpoint can record. W8A32, W8A16 and W8A8
 * store the same int8 tensors (they differ in what forward does with the
 * activations); W4A16 stores group-wise 4-bit weights.
 */
export type CheckpointMethod = "w8a16" | "w8a32" | "w8a8" | "w4a16";

/**
 * The stored layout of `method`: int8 per output row for the int8 methods,
 * 4-bit groups (default 128 inputs) for w4a16, zero points when asymmetric.
 * A group size for an int8 method is an error.
 *
 * @example
 * ```ts
 * import { weightSchemeOf } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.deepEqual(weightSchemeOf("w4a16"), { bits: 4, groupSize: 128, symmetric: true, method: "w4a16" });
 * assert.deepEqual(weightSchemeOf("w8a8", { asymmetric: true }), { bits: 8, groupSize: null, symmetric: false, method: "w8a8" });
 * assert.throws(() => weightSchemeOf("w8a16", { groupSize: 32 }), /w4a16 only/);
 * ```
 */
export function weightSchemeOf(
  method: CheckpointMethod,
  options: { asymmetric?: boolean; groupSize?: number } = {},
): WeightScheme {
  if (method === "w4a16") {
    return {
      bits: 4,
      groupSize: options.groupSize ?? DEFAULT_INT4_GROUP_SIZE,
      symmetric: !options.asymmetric,
      method,
    };
  }
  if (options.groupSize !== undefined) {
    throw new RangeError(
      `a group size applies to w4a16 only; ${method} has one int8 scale per output row`,
    );
  }
  return { bits: 8, groupSize: null, symmetric: !options.asymmetric, method };
}
