/**
 * {@linkcode W8A32LinearLayer}: int8 weights, f32 activations.
 *
 * @module
 */

import type { FloatDType } from "../dtype.ts";
import type { Tensor } from "../tensor.ts";
import { W8A32_ACTIVATIONS } from "./forward.ts";
import { Int8LinearLayer } from "./int8_linear_layer.ts";

/**
 * TinyQ's W8A32 layer: int8 weights with per-row scales, f32 in, f32 out.
 *
 * @example
 * ```ts
 * import { Tensor, W8A32LinearLayer } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const layer = new W8A32LinearLayer(2, 1, { bias: false });
 * layer.quantize(new Tensor(new Float32Array([1, -0.5]), [1, 2]));
 * const y = await layer.forward(new Tensor(new Float32Array([2, 2]), [1, 2]));
 * assert.ok(Math.abs(y.data[0] as number - 1) < 0.01);
 * ```
 */
export class W8A32LinearLayer extends Int8LinearLayer {
  /** `input @ dequant(W)ᵀ + bias` for f32 input [..., in]; f32 result. */
  async forward(input: Tensor): Promise<Tensor> {
    return await this.forwardFloat("W8A32", W8A32_ACTIVATIONS, input);
  }

  /** The activation dtypes forward takes. */
  static readonly activations: readonly FloatDType[] = W8A32_ACTIVATIONS;
}
