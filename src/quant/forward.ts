/**
 * TinyQ's forward functions: a linear layer over int8 weights with one scale
 * per output row, run on the active backend with f32 accumulation.
 *
 * @module
 */

import type { Activations, Int8Weight } from "../backend/backend.ts";
import { activeBackend } from "../backend/select.ts";
import type { FloatDType } from "../dtype.ts";
import type { Tensor } from "../tensor.ts";
import { forwardRows } from "./quantized_linear_layer.ts";

/** The activation dtypes W8A32 takes. */
export const W8A32_ACTIVATIONS: readonly FloatDType[] = Object.freeze(["f32"]);
/** The activation dtypes W8A16 takes. */
export const W8A16_ACTIVATIONS: readonly FloatDType[] = Object.freeze([
  "f16",
  "bf16",
]);

const HINTS = {
  W8A32: "use W8A16 for f16/bf16",
  W8A16: "use W8A32 for f32",
} as const;

/**
 * Refuses activations the scheme does not take, with the scheme to use
 * instead (`takes` are W8A32's or W8A16's dtypes).
 */
export function checkInt8Activations(
  scheme: "W8A32" | "W8A16",
  takes: readonly FloatDType[],
  input: Tensor,
): void {
  if (!(takes as readonly string[]).includes(input.dtype)) {
    throw new TypeError(
      `${scheme} takes ${takes.join(" or ")} activations, got ${input.dtype} (${
        HINTS[scheme]
      })`,
    );
  }
}

/** The kernel view of loose int8 tensors, checked (the layers check theirs as they are set). */
function int8View(
  weight: Tensor,
  scales: Tensor,
  zeroPoints: Tensor | null,
): Int8Weight {
  if (weight.dtype !== "i8" || weight.ndim !== 2) {
    throw new TypeError(
      `Int8 weights must be an i8 [out, in] tensor, got ${weight.dtype} [${
        weight.shape.join(", ")
      }]`,
    );
  }
  const [n, k] = weight.shape as [number, number];
  if (scales.dtype !== "f32" || scales.size !== n) {
    throw new TypeError(
      `Scales must be f32 [${n}], got ${scales.dtype} [${
        scales.shape.join(", ")
      }]`,
    );
  }
  if (zeroPoints && (zeroPoints.dtype !== "i8" || zeroPoints.size !== n)) {
    throw new TypeError(
      `Zero points must be i8 [${n}], got ${zeroPoints.dtype} [${
        zeroPoints.shape.join(", ")
      }]`,
    );
  }
  return {
    q: weight.data as Int8Array,
    scales: scales.data as Float32Array,
    zeroPoints: (zeroPoints?.data as Int8Array | undefined) ?? null,
    n,
    k,
  };
}

/**
 * A one-off int8 forward on loose tensors: the view is made for this call
 * and released after it (a layer keeps its view across calls).
 */
async function int8Forward(
  scheme: "W8A32" | "W8A16",
  takes: readonly FloatDType[],
  weight: Tensor,
  input: Tensor,
  scales: Tensor,
  bias: Tensor | null,
  zeroPoints: Tensor | null,
): Promise<Tensor> {
  checkInt8Activations(scheme, takes, input);
  const layer = `${scheme}LinearLayer`;
  const w = int8View(weight, scales, zeroPoints);
  if (bias && bias.size !== w.n) {
    throw new RangeError(
      `${layer} bias must have ${w.n} elements, got ${bias.size}`,
    );
  }
  const backend = await activeBackend();
  try {
    return await forwardRows(
      layer,
      input,
      w.k,
      w.n,
      bias,
      (m, b) =>
        backend.linearInt8(
          input.data as Activations,
          input.dtype as FloatDType,
          m,
          w,
          b,
        ),
    );
  } finally {
    backend.release(w);
  }
}

/**
 * An int8 forward on loose tensors: `weight` i8 [out, in], `input`
 * [..., in], `scales` f32 [out], optional `bias` [out] and `zeroPoints`
 * i8 [out].
 */
export type Int8Forward = (
  weight: Tensor,
  input: Tensor,
  scales: Tensor,
  bias?: Tensor | null,
  zeroPoints?: Tensor | null,
) => Promise<Tensor>;

/** The loose-tensor forward of `scheme`. */
function int8ForwardOf(
  scheme: "W8A32" | "W8A16",
  takes: readonly FloatDType[],
): Int8Forward {
  return (weight, input, scales, bias = null, zeroPoints = null) =>
    int8Forward(scheme, takes, weight, input, scales, bias, zeroPoints);
}

/**
 * W8A32 forward (TinyQ's `w8_a32_forward`): f32 input [..., in] times int8
 * weights [out, in] with per-row scales, plus bias; f32 result [..., out].
 *
 * @example
 * ```ts
 * import { Tensor, w8a32Forward } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const y = await w8a32Forward(
 *   new Tensor(new Int8Array([2, -4]), [1, 2]),
 *   new Tensor(new Float32Array([1, 1]), [1, 2]),
 *   new Tensor(new Float32Array([0.5]), [1]),
 * );
 * assert.deepEqual([...y.data], [-1]);
 * ```
 */
export const w8a32Forward: Int8Forward = int8ForwardOf(
  "W8A32",
  W8A32_ACTIVATIONS,
);

/**
 * W8A16 forward (TinyQ's `w8_a16_forward`): f16 or bf16 input [..., in],
 * int8 weights with per-row scales, f32 accumulation, result in the input's
 * dtype.
 *
 * @example
 * ```ts
 * import { Tensor, w8a16Forward } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const y = await w8a16Forward(
 *   new Tensor(new Int8Array([2, -4]), [1, 2]),
 *   new Tensor(new Float16Array([1, 1]), [1, 2]),
 *   new Tensor(new Float32Array([0.5]), [1]),
 * );
 * assert.equal(y.dtype, "f16");
 * assert.deepEqual([...y.data], [-1]);
 * ```
 */
export const w8a16Forward: Int8Forward = int8ForwardOf(
  "W8A16",
  W8A16_ACTIVATIONS,
);
