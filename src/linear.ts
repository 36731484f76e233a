/**
 * {@linkcode Linear}: the float layer that quantization replaces.
 *
 * @module
 */

import { outShape, rowsOf } from "./forward_shape.ts";
import type { Backend, F32Weight } from "./backend/backend.ts";
import { activeBackend } from "./backend/select.ts";
import { f32ToFloatArray, type FloatDType, isFloatDType } from "./dtype.ts";
import { Module } from "./module.ts";
import { materialize, Tensor, type TensorSource } from "./tensor.ts";

// Set by fromTensors() so that the constructor does not allocate zero weights.
let wrapping = false;

/** Options of {@linkcode Linear}. */
export interface LinearOptions {
  /** Whether the layer has a bias (default true, as in PyTorch). */
  bias?: boolean;
  /** The dtype of weight and bias (default f32). */
  dtype?: FloatDType;
}

/**
 * A fully connected layer, `y = x @ Wᵀ + b`, with `weight` [out, in] and
 * `bias` [out] or null. New weights are zeros; assign real ones (or use
 * {@linkcode Linear.fromTensors}).
 *
 * @example
 * ```ts
 * import { Linear, Tensor } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const lin = new Linear(2, 1);
 * lin.weight = new Tensor(new Float32Array([1, 2]), [1, 2]);
 * lin.bias = new Tensor(new Float32Array([0.5]), [1]);
 * const y = await lin.forward(new Tensor(new Float32Array([3, 4]), [1, 2]));
 * assert.deepEqual([...y.data], [11.5]);
 * assert.equal(String(lin), "Linear(in_features=2, out_features=1, bias=True)");
 * ```
 */
export class Linear extends Module {
  /** Input features. */
  readonly inFeatures: number;
  /** Output features. */
  readonly outFeatures: number;
  #f32: { source: TensorSource; weight: F32Weight; backend: Backend } | null =
    null;

  /** Creates a layer with zero weights (and a zero bias unless `bias: false`). */
  constructor(
    inFeatures: number,
    outFeatures: number,
    options: LinearOptions = {},
  ) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    if (wrapping) return;
    const dtype = options.dtype ?? "f32";
    this.setTensor("weight", Tensor.zeros([outFeatures, inFeatures], dtype));
    this.setTensor(
      "bias",
      options.bias === false ? null : Tensor.zeros([outFeatures], dtype),
    );
  }

  /** Wraps existing tensors (in memory or lazy): weight [out, in], bias [out]. */
  static fromTensors(
    weight: TensorSource,
    bias: TensorSource | null = null,
  ): Linear {
    if (weight.shape.length !== 2) {
      throw new RangeError(
        `Linear weight must be 2-D, got [${weight.shape.join(", ")}]`,
      );
    }
    const [out, inF] = weight.shape as [number, number];
    wrapping = true;
    let lin: Linear;
    try {
      lin = new Linear(inF, out);
    } finally {
      wrapping = false;
    }
    lin.weight = weight;
    lin.bias = bias;
    return lin;
  }

  /** The weight, [out, in]. */
  get weight(): TensorSource {
    return this.getTensor("weight")!;
  }
  set weight(w: TensorSource) {
    if (
      w.shape.length !== 2 || w.shape[0] !== this.outFeatures ||
      w.shape[1] !== this.inFeatures
    ) {
      throw new RangeError(
        `Linear weight must be [${this.outFeatures}, ${this.inFeatures}], got [${
          w.shape.join(", ")
        }]`,
      );
    }
    this.setTensor("weight", w);
  }

  /** The bias, [out], or null. */
  get bias(): TensorSource | null {
    return this.getTensor("bias") ?? null;
  }
  set bias(b: TensorSource | null) {
    if (b && (b.shape.length !== 1 || b.shape[0] !== this.outFeatures)) {
      throw new RangeError(
        `Linear bias must be [${this.outFeatures}], got [${
          b.shape.join(", ")
        }]`,
      );
    }
    this.setTensor("bias", b);
  }

  /** `x @ Wᵀ + b` for x of shape [..., in] in any float dtype; f32 arithmetic, result in x's dtype. */
  async forward(x: Tensor): Promise<Tensor> {
    if (!isFloatDType(x.dtype)) {
      throw new TypeError(
        `Linear.forward() takes f32, f16 or bf16, got ${x.dtype}`,
      );
    }
    const m = rowsOf(x, this.inFeatures, "Linear");
    const backend = await activeBackend();
    const weight = await this.#f32Weight(backend);
    const bias = this.bias ? (await materialize(this.bias)).toF32Array() : null;
    const y = await backend.linearF32(x.toF32Array(), m, weight, bias);
    return new Tensor(
      f32ToFloatArray(y, x.dtype),
      outShape(x, this.outFeatures),
      x.dtype,
    );
  }

  async #f32Weight(backend: Backend): Promise<F32Weight> {
    const source = this.weight;
    if (this.#f32?.source !== source || this.#f32.backend !== backend) {
      this.dispose();
      const w = await materialize(source);
      const weight = {
        data: w.toF32Array(),
        n: this.outFeatures,
        k: this.inFeatures,
      };
      this.#f32 = { source, weight, backend };
    }
    return this.#f32.weight;
  }

  /** `in_features=…, out_features=…, bias=…`, as PyTorch prints a Linear. */
  override extraRepr(): string {
    return `in_features=${this.inFeatures}, out_features=${this.outFeatures}, bias=${
      this.bias ? "True" : "False"
    }`;
  }

  /** Frees the backend's copy of the weight (GPU buffers). */
  override dispose(): void {
    this.#f32?.backend.release(this.#f32.weight);
    this.#f32 = null;
    super.dispose();
  }
}
