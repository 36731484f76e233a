/**
 * {@linkcode W8A8LinearLayer}: int8 weights and int8 activations quantized
 * per token at run time.
 *
 * @module
 */

import type { Int8Weight } from "../backend/backend.ts";
import type { Tensor } from "../tensor.ts";
import { activeBackend } from "../backend/select.ts";
import { forwardRows, KernelWeight } from "./_quantized_layer.ts";
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
  #kernel = new KernelWeight<Int8Weight>();

  /** `quant(x) @ Wᵀ · s_x · s_w + bias` for f32 input [..., in]; f32 result [..., out]. */
  async forward(input: Tensor): Promise<Tensor> {
    if (input.dtype !== "f32") {
      throw new TypeError(
        `W8A8LinearLayer takes f32 activations, got ${input.dtype} (convert with input.to("f32"))`,
      );
    }
    return await forwardRows(
      "W8A8LinearLayer",
      input,
      this.inFeatures,
      this.outFeatures,
      this.bias,
      async (m, bias) =>
        await (await activeBackend()).linearW8A8(
          input.data as Float32Array,
          m,
          this.#kernelWeight(),
          bias,
        ),
    );
  }

  #kernelWeight(): Int8Weight {
    const weight = this.int8Weights;
    const scales = this.scales.data as Float32Array;
    const zeroPoints = (this.zeroPoints?.data as Int8Array | undefined) ?? null;
    return this.#kernel.of([weight, scales, zeroPoints], () => ({
      q: weight.data as Int8Array,
      scales,
      zeroPoints,
      n: this.outFeatures,
      k: this.inFeatures,
    }));
  }

  /** Frees the backend's copy of the weights (GPU buffers). */
  override dispose(): void {
    this.#kernel.release();
    super.dispose();
  }
}
