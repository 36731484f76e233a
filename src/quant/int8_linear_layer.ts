/**
 * The common base of the int8 weight layers (W8A32, W8A16, W8A8): their
 * buffers, checked as they are set, and the kernel view of them.
 *
 * @module
 */

import type { Activations, Int8Weight } from "../backend/backend.ts";
import type { FloatDType } from "../dtype.ts";
import { Tensor } from "../tensor.ts";
import { checkInt8Activations } from "./forward.ts";
import { INT8_PER_ROW, type StoredRows, type WeightLayout } from "./layouts.ts";
import {
  QuantizedLinearLayer,
  type QuantizedLinearOptions,
} from "./quantized_linear_layer.ts";

export type {
  QuantizedLinearOptions,
  QuantizeOptions,
} from "./quantized_linear_layer.ts";

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
export abstract class Int8LinearLayer extends QuantizedLinearLayer<Int8Weight> {
  /** Creates the buffers: zero weights, unit scales, a zero bias unless `bias: false`. */
  constructor(
    inFeatures: number,
    outFeatures: number,
    options: QuantizedLinearOptions = {},
  ) {
    super(inFeatures, outFeatures);
    this.setTensor(
      "int8_weights",
      Tensor.zeros([outFeatures, inFeatures], "i8"),
    );
    this.setTensor(
      "scales",
      new Tensor(new Float32Array(outFeatures).fill(1), [outFeatures]),
    );
    this.setTensor("zero_points", null);
    this.initBias(options);
  }

  /** Int8 with one scale (and zero point) per output row. */
  get layout(): WeightLayout {
    return INT8_PER_ROW;
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
    this.releaseKernelWeight();
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
    return this.optionalBuffer("zero_points");
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

  /** Stores the row quantizer's int8 values, scales and zero points. */
  protected store(rows: StoredRows): void {
    const shape = [this.outFeatures, this.inFeatures];
    this.int8Weights = new Tensor(rows.weights as Int8Array, shape);
    this.scales = new Tensor(rows.scales, [this.outFeatures]);
    this.zeroPoints = rows.zeroPoints
      ? new Tensor(rows.zeroPoints as Int8Array, [this.outFeatures], "i8")
      : null;
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

  /**
   * The float-activation forward of W8A32 and W8A16: `input` in one of
   * `takes` (else an error naming `scheme`), the int8 kernel, f32
   * accumulation, the result in the input's dtype.
   */
  protected forwardFloat(
    scheme: "W8A32" | "W8A16",
    takes: readonly FloatDType[],
    input: Tensor,
  ): Promise<Tensor> {
    checkInt8Activations(scheme, takes, input);
    return this.runRows(input, (backend, m, w, bias) =>
      backend.linearInt8(
        input.data as Activations,
        input.dtype as FloatDType,
        m,
        w,
        bias,
      ));
  }

  /** The backend's view of the int8 weights. */
  protected makeKernelWeight(): Int8Weight {
    return {
      q: this.int8Weights.data as Int8Array,
      scales: this.scales.data as Float32Array,
      zeroPoints: (this.zeroPoints?.data as Int8Array | undefined) ?? null,
      n: this.outFeatures,
      k: this.inFeatures,
    };
  }
}
