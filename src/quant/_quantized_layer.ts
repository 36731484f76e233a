/**
 * What the quantized Linear layers (int8 and 4-bit) share: the bias they
 * keep in float, the checks on the float weights they quantize, running a
 * kernel over the rows of an input, and the one kernel-side weight object
 * per set of tensors that a backend keys its caches on.
 *
 * @module
 */

import { outShape, rowsOf } from "../_forward.ts";
import type { Int4Weight, Int8Weight } from "../backend/backend.ts";
import { f32ToFloatArray, type FloatDType, isFloatDType } from "../dtype.ts";
import type { Module } from "../module.ts";
import { Tensor } from "../tensor.ts";
import { activeBackend } from "../backend/select.ts";
import type { QuantizedLinearOptions } from "./int8_linear_layer.ts";

/** A new layer's bias: zeros [out] (f32 unless `dtype`), or null for `bias: false`. */
export function initialBias(
  outFeatures: number,
  options: QuantizedLinearOptions,
): Tensor | null {
  return options.bias === false
    ? null
    : Tensor.zeros([outFeatures], options.dtype ?? "f32");
}

/** `t` as a layer's bias, reshaped to [out]; a TypeError unless a float [out]. */
export function checkedBias(
  t: Tensor | null,
  outFeatures: number,
): Tensor | null {
  if (t && (!isFloatDType(t.dtype) || t.size !== outFeatures)) {
    throw new TypeError(
      `bias must be a float [${outFeatures}], got ${t.dtype} [${
        t.shape.join(", ")
      }]`,
    );
  }
  return t?.reshape([outFeatures]) ?? null;
}

/** A buffer of `layer` that may be unset (zero points, bias). */
export function optionalBuffer(layer: Module, name: string): Tensor | null {
  return (layer.getTensor(name) as Tensor | null | undefined) ?? null;
}

/**
 * The dtype of `weights` once checked that they can be quantized into an
 * [out, in] layer: that shape, f32, f16 or bf16. `name` names the tensor in
 * the error.
 */
export function checkWeightsToQuantize(
  weights: Tensor,
  outFeatures: number,
  inFeatures: number,
  name: string,
): FloatDType {
  if (
    weights.ndim !== 2 || weights.shape[0] !== outFeatures ||
    weights.shape[1] !== inFeatures
  ) {
    throw new RangeError(
      `Tensor "${name}" must be [${outFeatures}, ${inFeatures}] to quantize, got [${
        weights.shape.join(", ")
      }]`,
    );
  }
  if (!isFloatDType(weights.dtype)) {
    throw new TypeError(
      `Tensor "${name}" must be f32, f16 or bf16 to quantize, got ${weights.dtype}`,
    );
  }
  return weights.dtype;
}

/**
 * Runs `kernel` on the M rows of `input` [..., in] (`layer` names the layer
 * in a shape error) with the bias in f32; its f32 result [M, out] comes back
 * as [..., out] in the input's dtype.
 */
export async function forwardRows(
  layer: string,
  input: Tensor,
  inFeatures: number,
  outFeatures: number,
  bias: Tensor | null,
  kernel: (m: number, bias: Float32Array | null) => Promise<Float32Array>,
): Promise<Tensor> {
  const m = rowsOf(input, inFeatures, layer);
  const y = await kernel(m, bias ? bias.toF32Array() : null);
  const dtype = input.dtype as FloatDType;
  return new Tensor(
    f32ToFloatArray(y, dtype),
    outShape(input, outFeatures),
    dtype,
  );
}

/**
 * The kernel-side view of a low-bit layer's weight. Its identity is the
 * backend's cache key (GPU buffers), so it must stay the same object across
 * calls while the layer's tensors do, and be released when they change.
 */
export class KernelWeight<W extends Int8Weight | Int4Weight> {
  #tensors: readonly unknown[] = [];
  #weight: W | null = null;

  /** The view of `tensors`: the one made before while they are the same, else `make()`. */
  of(tensors: readonly unknown[], make: () => W): W {
    if (this.#weight && tensors.every((t, i) => t === this.#tensors[i])) {
      return this.#weight;
    }
    this.release();
    this.#tensors = tensors;
    return this.#weight = make();
  }

  /** Frees what the backend keeps for the current view, if any. */
  release(): void {
    const w = this.#weight;
    if (w) void activeBackend().then((b) => b.release(w), () => {});
    this.#weight = null;
    this.#tensors = [];
  }
}
