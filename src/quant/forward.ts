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
import { forwardRows } from "./_quantized_layer.ts";

// The kernel-side view of an int8 weight, kept per int8 tensor so that a
// backend sees the same object on every call (its key for GPU buffers).
const kernelWeights = new WeakMap<Tensor, Int8Weight>();

function int8WeightOf(
  weight: Tensor,
  scales: Tensor,
  zeroPoints: Tensor | null,
): Int8Weight {
  const cached = kernelWeights.get(weight);
  if (
    cached && cached.scales === scales.data &&
    cached.zeroPoints === (zeroPoints?.data ?? null)
  ) return cached;
  if (cached) void activeBackend().then((b) => b.release(cached), () => {});
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
  const w: Int8Weight = {
    q: weight.data as Int8Array,
    scales: scales.data as Float32Array,
    zeroPoints: (zeroPoints?.data as Int8Array | undefined) ?? null,
    n,
    k,
  };
  kernelWeights.set(weight, w);
  return w;
}

/** Frees what the active backend keeps for an int8 weight tensor (GPU buffers). */
export async function releaseInt8Weight(weight: Tensor): Promise<void> {
  const w = kernelWeights.get(weight);
  if (!w) return;
  kernelWeights.delete(weight);
  (await activeBackend()).release(w);
}

/**
 * An int8 layer's forward on the active backend, for the activation dtypes
 * `takes` of `scheme` (`takesText` in the error, with `hint` naming the
 * scheme to use instead).
 */
async function int8Forward(
  scheme: "W8A32" | "W8A16",
  takes: readonly FloatDType[],
  takesText: string,
  hint: string,
  weight: Tensor,
  input: Tensor,
  scales: Tensor,
  bias: Tensor | null,
  zeroPoints: Tensor | null,
): Promise<Tensor> {
  if (!(takes as readonly string[]).includes(input.dtype)) {
    throw new TypeError(
      `${scheme} takes ${takesText} activations, got ${input.dtype} (${hint})`,
    );
  }
  const layer = `${scheme}LinearLayer`;
  const w = int8WeightOf(weight, scales, zeroPoints);
  return await forwardRows(layer, input, w.k, w.n, bias, async (m, b) => {
    if (bias && bias.size !== w.n) {
      throw new RangeError(
        `${layer} bias must have ${w.n} elements, got ${bias.size}`,
      );
    }
    const backend = await activeBackend();
    return await backend.linearInt8(
      input.data as Activations,
      input.dtype as FloatDType,
      m,
      w,
      b,
    );
  });
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
export function w8a32Forward(
  weight: Tensor,
  input: Tensor,
  scales: Tensor,
  bias: Tensor | null = null,
  zeroPoints: Tensor | null = null,
): Promise<Tensor> {
  return int8Forward(
    "W8A32",
    ["f32"],
    "f32",
    "use W8A16 for f16/bf16",
    weight,
    input,
    scales,
    bias,
    zeroPoints,
  );
}

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
export function w8a16Forward(
  weight: Tensor,
  input: Tensor,
  scales: Tensor,
  bias: Tensor | null = null,
  zeroPoints: Tensor | null = null,
): Promise<Tensor> {
  return int8Forward(
    "W8A16",
    ["f16", "bf16"],
    "f16 or bf16",
    "use W8A32 for f32",
    weight,
    input,
    scales,
    bias,
    zeroPoints,
  );
}
