/**
 * The common base of the int8 weight layers: buffers, quantize(), dispose().
 *
 * @module
 */

import type { FloatDType } from "../dtype.ts";
import { Module } from "../module.ts";
import { Tensor } from "../tensor.ts";
import { quantizeRowsInt8 } from "./quantize_rows.ts";
import { quantizeRowsInt8Asymmetric } from "./quantize_rows_asymmetric.ts";
import { releaseInt8Weight } from "./forward.ts";
import {
  checkedBias,
  checkWeightsToQuantize,
  initialBias,
  optionalBuffer,
} from "./_quantized_layer.ts";

/** Options of the quantized layers' constructors (TinyQ's `bias`, `dtype`). */
export interface QuantizedLinearOptions {
  /** Whether the layer has a bias (default true). */
  bias?: boolean;
  /** The float dtype of the bias (default f32). */
  dtype?: FloatDType;
}

/** Options of {@linkcode Int8LinearLayer.quantize}. */
export interface QuantizeOptions {
  /** Store a zero point per row (asymmetric, scale = (max − min) / 255). Default false. */
  asymmetric?: boolean;
  /** The weight's name, for error messages (e.g. the checkpoint tensor name). */
  name?: string;
}

/**
 * A Linear layer with int8 weights [out, in] and one f32 scale per output row;
 * its tensors are named as in the native file format: `int8_weights`,
 * `scales`, `zero_points` (asymmetric only) and `bias`.
 *
 * Weights are immutable once a forward has run: the backends keep packed or
 * GPU copies keyed by the tensor objects. Change them with `quantize()` or
 * by assigning new tensors (`int8Weights`, `scales`, …), which the next
 * forward sees on every backend; editing a tensor's `data` in place is not
 * seen by the wasm and WebGPU backends.
 */
export abstract class Int8LinearLayer extends Module {
  /** Input features. */
  readonly inFeatures: number;
  /** Output features. */
  readonly outFeatures: number;

  /** Creates the buffers: zero weights, unit scales, a zero bias unless `bias: false`. */
  constructor(
    inFeatures: number,
    outFeatures: number,
    options: QuantizedLinearOptions = {},
  ) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    this.setTensor(
      "int8_weights",
      Tensor.zeros([outFeatures, inFeatures], "i8"),
    );
    this.setTensor(
      "scales",
      new Tensor(new Float32Array(outFeatures).fill(1), [outFeatures]),
    );
    this.setTensor("zero_points", null);
    this.setTensor("bias", initialBias(outFeatures, options));
  }

  #buffer(name: string): Tensor {
    return this.getTensor(name) as Tensor;
  }

  /** The quantized weights, i8 [out, in]. */
  get int8Weights(): Tensor {
    return this.#buffer("int8_weights");
  }
  set int8Weights(t: Tensor) {
    if (
      t.dtype !== "i8" || t.shape[0] !== this.outFeatures ||
      t.shape[1] !== this.inFeatures || t.ndim !== 2
    ) {
      throw new TypeError(
        `int8Weights must be i8 [${this.outFeatures}, ${this.inFeatures}], got ${t.dtype} [${
          t.shape.join(", ")
        }]`,
      );
    }
    this.dispose();
    this.setTensor("int8_weights", t);
  }

  /** One scale per output row, f32 [out]. */
  get scales(): Tensor {
    return this.#buffer("scales");
  }
  set scales(t: Tensor) {
    if (t.dtype !== "f32" || t.size !== this.outFeatures) {
      throw new TypeError(
        `scales must be f32 [${this.outFeatures}], got ${t.dtype} [${
          t.shape.join(", ")
        }]`,
      );
    }
    this.setTensor("scales", t.reshape([this.outFeatures]));
  }

  /** Zero points, i8 [out], for asymmetric weights; null when symmetric. */
  get zeroPoints(): Tensor | null {
    return optionalBuffer(this, "zero_points");
  }
  set zeroPoints(t: Tensor | null) {
    if (t && (t.dtype !== "i8" || t.size !== this.outFeatures)) {
      throw new TypeError(
        `zeroPoints must be i8 [${this.outFeatures}], got ${t.dtype} [${
          t.shape.join(", ")
        }]`,
      );
    }
    this.setTensor("zero_points", t);
  }

  /** The bias, [out] in any float dtype, or null. */
  get bias(): Tensor | null {
    return optionalBuffer(this, "bias");
  }
  set bias(t: Tensor | null) {
    this.setTensor("bias", checkedBias(t, this.outFeatures));
  }

  /**
   * Quantizes float weights [out, in] (f32, f16 or bf16) into this layer's
   * buffers: symmetric per-row int8 by default, asymmetric on request.
   */
  quantize(weights: Tensor, options: QuantizeOptions = {}): void {
    const name = options.name ?? "weights";
    const dtype = checkWeightsToQuantize(
      weights,
      this.outFeatures,
      this.inFeatures,
      name,
    );
    if (options.asymmetric) {
      const r = quantizeRowsInt8Asymmetric(
        weights.data,
        dtype,
        this.outFeatures,
        this.inFeatures,
        name,
      );
      this.int8Weights = new Tensor(r.q, [this.outFeatures, this.inFeatures]);
      this.scales = new Tensor(r.scales, [this.outFeatures]);
      this.zeroPoints = new Tensor(r.zeroPoints, [this.outFeatures], "i8");
      return;
    }
    const { q, scales } = quantizeRowsInt8(
      weights.data,
      dtype,
      this.outFeatures,
      this.inFeatures,
      name,
    );
    this.int8Weights = new Tensor(q, [this.outFeatures, this.inFeatures]);
    this.scales = new Tensor(scales, [this.outFeatures]);
    this.zeroPoints = null;
  }

  /** The float weights these int8 values stand for: `(q − zp) · scale`, f32 [out, in]. */
  dequantize(): Tensor {
    const q = this.int8Weights.data as Int8Array;
    const s = this.scales.data as Float32Array;
    const zp = this.zeroPoints?.data as Int8Array | undefined;
    const out = new Float32Array(q.length);
    const k = this.inFeatures;
    for (let r = 0; r < this.outFeatures; r++) {
      const z = zp ? zp[r]! : 0;
      for (let c = 0; c < k; c++) out[r * k + c] = (q[r * k + c]! - z) * s[r]!;
    }
    return new Tensor(out, [this.outFeatures, k]);
  }

  /** Runs the layer on an input [..., in]. */
  abstract forward(input: Tensor): Promise<Tensor>;

  /** Frees the backend's copy of the weights (GPU buffers). */
  override dispose(): void {
    const w = this.getTensor("int8_weights");
    if (w instanceof Tensor) void releaseInt8Weight(w);
    super.dispose();
  }
}
