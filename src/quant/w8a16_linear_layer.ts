/**
 * {@linkcode W8A16LinearLayer}: int8 weights, f16 or bf16 activations.
 *
 * @module
 */

import type { FloatDType } from "../dtype.ts";
import type { Tensor } from "../tensor.ts";
import { W8A16_ACTIVATIONS } from "./forward.ts";
import { Int8LinearLayer } from "./int8_linear_layer.ts";

/**
 * TinyQ's W8A16 layer: int8 weights with per-row scales; f16 or bf16 in, the
 * same dtype out, f32 accumulation. Unlike TinyQ's own W8A16 it uses the
 * exact per-channel math of W8A32 (f32 division, clamp), so 128 never wraps.
 *
 * @example
 * ```ts
 * import { Tensor, W8A16LinearLayer } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const layer = new W8A16LinearLayer(2, 1, { bias: false, dtype: "bf16" });
 * layer.quantize(new Tensor(new Float32Array([1, -0.5]), [1, 2]));
 * const y = await layer.forward(new Tensor(new Float16Array([2, 2]), [1, 2]));
 * assert.equal(y.dtype, "f16");
 * ```
 */
export class W8A16LinearLayer extends Int8LinearLayer {
  /** `input @ dequant(W)ᵀ + bias` for f16/bf16 input [..., in]; result in the input's dtype. */
  async forward(input: Tensor): Promise<Tensor> {
    return await this.forwardFloat("W8A16", W8A16_ACTIVATIONS, input);
  }

  /** The activation dtypes forward takes. */
  static readonly activations: readonly FloatDType[] = W8A16_ACTIVATIONS;
}
