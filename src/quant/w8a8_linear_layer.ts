/**
 * {@linkcode W8A8LinearLayer}: int8 weights and int8 activations quantized
 * per token at run time.
 *
 * @module
 */

import type { FloatDType } from "../dtype.ts";
import type { Tensor } from "../tensor.ts";
import { Int8LinearLayer } from "./int8_linear_layer.ts";

/**
 * A W8A8 layer (dynamic per-token int8 activations, as torchao's
 * `Int8DynamicActivationInt8WeightConfig` and compressed-tensors' W8A8
 * preset): the weights are int8 per output row exactly as in
 * {@linkcode W8A32LinearLayer} (symmetric, or asymmetric with zero points),
 * and at every `forward` each input row `x` is quantized with its own scale
 * `s_x = f32(absmax(x) / 127)` (1 for an all-zero row), half to even, clamped
 * to [−128, 127]. The products are exact integers,
 * `acc = Σ q_x · (q_w − zp)`, and the result is
 * `y = f32(f32(f32(acc) · s_x) · s_w)`, then `f32(y + bias)`: the order
 * torchao's `_int_scaled_matmul` uses (the int32 result converted to f32,
 * times the row scale, times the weight scale), which a GPU computes the
 * same way. f32 in, f32 out; the tensors are those of the int8 layers
 * (`int8_weights`, `scales`, `zero_points`, `bias`), so W8A8 checkpoints
 * store nothing more.
 *
 * @example
 * ```ts
 * import { Tensor, W8A8LinearLayer } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const layer = new W8A8LinearLayer(4, 1, { bias: false });
 * layer.quantize(new Tensor(new Float32Array([1, -0.5, 0.25, 0]), [1, 4]));
 * const y = await layer.forward(new Tensor(new Float32Array([1, 1, 2, -1]), [1, 4]));
 * assert.ok(Math.abs((y.data[0] as number) - 1) < 0.02);
 * ```
 */
export class W8A8LinearLayer extends Int8LinearLayer {
  /** `quant(x) @ Wᵀ · s_x · s_w + bias` for f32 input [..., in]; f32 result [..., out]. */
  async forward(input: Tensor): Promise<Tensor> {
    if (input.dtype !== "f32") {
      throw new TypeError(
        `W8A8LinearLayer takes f32 activations, got ${input.dtype} (convert with input.to("f32"))`,
      );
    }
    return await this.runRows(
      input,
      (backend, m, w, bias) =>
        backend.linearW8A8(input.data as Float32Array, m, w, bias),
    );
  }

  /** The activation dtypes forward takes (quantized to int8 inside). */
  static readonly activations: readonly FloatDType[] = Object.freeze(["f32"]);
}
