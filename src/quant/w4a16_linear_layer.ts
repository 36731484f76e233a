/**
 * {@linkcode W4A16LinearLayer}: group-wise 4-bit weights, f16/bf16 (or f32)
 * activations.
 *
 * @module
 */

import type { Activations, Int4Weight } from "../backend/backend.ts";
import { type FloatDType, isFloatDType } from "../dtype.ts";
import { Tensor } from "../tensor.ts";
import { INT4_GROUPS, type StoredRows, type WeightLayout } from "./layouts.ts";
import {
  QuantizedLinearLayer,
  type QuantizedLinearOptions,
} from "./quantized_linear_layer.ts";
import {
  checkInt4GroupSize,
  DEFAULT_INT4_GROUP_SIZE,
  dequantizeInt4,
  type Int4GroupSize,
} from "./int4.ts";

/** Options of the {@linkcode W4A16LinearLayer} constructor. */
export interface W4A16LinearOptions extends QuantizedLinearOptions {
  /** Inputs per group sharing a scale: 32, 64 or 128 (default 128). */
  groupSize?: number;
  /**
   * The weight's name for the error a bad group size raises (e.g.
   * `"model.layers.0.mlp.down_proj.weight"`); by default the layer's shape.
   */
  name?: string;
}

/** The tensors of a stored W4A16 layer, for {@linkcode W4A16LinearLayer.fromTensors}. */
export interface W4A16Tensors {
  /** U8 [out, in / 2], two codes per byte. */
  int4Weights: Tensor;
  /** F32 [out, in / group]. */
  scales: Tensor;
  /** U8 [out, in / group], or null/absent when symmetric. */
  zeroPoints?: Tensor | null;
  /** [out] in any float dtype, or null/absent. */
  bias?: Tensor | null;
}

/**
 * A Linear layer with 4-bit weights in groups along the input dimension (as
 * llama.cpp's Q4 blocks, AWQ/GPTQ storage and compressed-tensors' W4A16).
 * Its tensors are named as in the native file format: `int4_weights` (U8
 * [out, in/2]: element 2j in the low nibble, 2j + 1 in the high nibble,
 * codes `q + 8` when symmetric, `q` when asymmetric), `scales` (F32
 * [out, in/group]), `zero_points` (U8 [out, in/group], asymmetric only) and
 * `bias` (kept in its dtype). See `int4.ts` for the exact quantization math.
 *
 * `forward` takes f16 or bf16 (or f32) activations and returns the same
 * dtype; it accumulates in f32 or better, one partial sum per group scaled
 * once, and never makes a dequantized copy of the weight.
 *
 * @example
 * Like the int8 layers, its weights are immutable once a forward has run:
 * change them with `quantize()` or new tensors, not by editing `data`.
 *
 * ```ts
 * import { Tensor, W4A16LinearLayer } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const layer = new W4A16LinearLayer(64, 2, { bias: false, groupSize: 32 });
 * const w = Float32Array.from({ length: 128 }, (_, i) => Math.sin(i) / 8);
 * layer.quantize(new Tensor(w, [2, 64]), { asymmetric: true });
 * assert.deepEqual(layer.scales.shape, [2, 2]);
 * const y = await layer.forward(new Tensor(new Float16Array(64).fill(1), [1, 64]));
 * assert.equal(y.dtype, "f16");
 * ```
 */
export class W4A16LinearLayer extends QuantizedLinearLayer<Int4Weight> {
  readonly #groupSize: Int4GroupSize;

  /**
   * Creates the buffers: codes for zero weights, unit scales, a zero bias
   * unless `bias: false`. Throws when the group size is not 32, 64 or 128 or
   * does not divide `inFeatures`.
   */
  constructor(
    inFeatures: number,
    outFeatures: number,
    options: W4A16LinearOptions = {},
  ) {
    super(inFeatures, outFeatures);
    this.#groupSize = checkInt4GroupSize(
      inFeatures,
      options.groupSize ?? DEFAULT_INT4_GROUP_SIZE,
      options.name ?? `W4A16LinearLayer(${inFeatures}, ${outFeatures}) weight`,
    );
    this.setTensor(
      "int4_weights",
      new Tensor(
        new Uint8Array(outFeatures * inFeatures / 2).fill(0x88),
        [outFeatures, inFeatures / 2],
      ),
    );
    this.setTensor(
      "scales",
      new Tensor(
        new Float32Array(outFeatures * this.#groups).fill(1),
        [outFeatures, this.#groups],
      ),
    );
    this.setTensor("zero_points", null);
    this.initBias(options);
  }

  /** Inputs per group sharing a scale (and zero point). */
  override get groupSize(): Int4GroupSize {
    return this.#groupSize;
  }

  /** 4-bit codes in groups along each row. */
  get layout(): WeightLayout {
    return INT4_GROUPS;
  }

  /** The activation dtypes forward takes. */
  static readonly activations: readonly FloatDType[] = Object.freeze([
    "f16",
    "bf16",
    "f32",
  ]);

  /**
   * Builds a layer from stored tensors (a checkpoint's `P.int4_weights`,
   * `P.scales`, `P.zero_points`, `P.bias`), inferring the sizes and the
   * group size from their shapes.
   *
   * @example
   * ```ts
   * import { Tensor, W4A16LinearLayer } from "@tinyq/tinyq";
   * import assert from "node:assert/strict";
   * const layer = W4A16LinearLayer.fromTensors({
   *   int4Weights: new Tensor(new Uint8Array(3 * 32), [3, 32]),
   *   scales: new Tensor(new Float32Array(3), [3, 1]),
   * });
   * assert.deepEqual([layer.inFeatures, layer.outFeatures, layer.groupSize], [64, 3, 64]);
   * ```
   */
  static fromTensors(tensors: W4A16Tensors): W4A16LinearLayer {
    const { int4Weights, scales } = tensors;
    if (int4Weights.ndim !== 2 || scales.ndim !== 2) {
      throw new TypeError(
        `W4A16 int4_weights and scales must be 2-D, got [${
          int4Weights.shape.join(", ")
        }] and [${scales.shape.join(", ")}]`,
      );
    }
    const [out, half] = int4Weights.shape as [number, number];
    const groups = scales.shape[1]!;
    const inF = half * 2;
    if (groups === 0 || inF % groups !== 0) {
      throw new RangeError(
        `W4A16 scales [${
          scales.shape.join(", ")
        }] do not split ${inF} input features into equal groups`,
      );
    }
    const layer = new W4A16LinearLayer(inF, out, {
      bias: false,
      groupSize: inF / groups,
    });
    layer.int4Weights = int4Weights;
    layer.scales = scales;
    layer.zeroPoints = tensors.zeroPoints ?? null;
    layer.bias = tensors.bias ?? null;
    return layer;
  }

  get #groups(): number {
    return this.inFeatures / this.groupSize;
  }

  #buffer(name: string): Tensor {
    return this.getTensor(name) as Tensor;
  }

  #check(t: Tensor, dtype: string, shape: number[], what: string): void {
    if (
      t.dtype !== dtype || t.ndim !== shape.length ||
      t.shape.some((d, i) => d !== shape[i])
    ) {
      throw new TypeError(
        `${what} must be ${dtype} [${shape.join(", ")}], got ${t.dtype} [${
          t.shape.join(", ")
        }]`,
      );
    }
  }

  /** The packed 4-bit codes, u8 [out, in / 2]. */
  get int4Weights(): Tensor {
    return this.#buffer("int4_weights");
  }
  set int4Weights(t: Tensor) {
    this.#check(
      t,
      "u8",
      [this.outFeatures, this.inFeatures / 2],
      "int4Weights",
    );
    this.releaseKernelWeight();
    this.setTensor("int4_weights", t);
  }

  /** One scale per group, f32 [out, in / groupSize]. */
  get scales(): Tensor {
    return this.#buffer("scales");
  }
  set scales(t: Tensor) {
    this.#check(t, "f32", [this.outFeatures, this.#groups], "scales");
    this.setTensor("scales", t);
  }

  /** One zero point (0–15) per group, u8 [out, in / groupSize]; null when symmetric. */
  get zeroPoints(): Tensor | null {
    return this.optionalBuffer("zero_points");
  }
  set zeroPoints(t: Tensor | null) {
    if (t) {
      this.#check(t, "u8", [this.outFeatures, this.#groups], "zeroPoints");
    }
    this.setTensor("zero_points", t);
  }

  /** Stores the row quantizer's packed codes, scales and zero points. */
  protected store(rows: StoredRows): void {
    const groupsShape = [this.outFeatures, this.#groups];
    this.int4Weights = new Tensor(rows.weights as Uint8Array, [
      this.outFeatures,
      this.inFeatures / 2,
    ]);
    this.scales = new Tensor(rows.scales, groupsShape);
    this.zeroPoints = rows.zeroPoints
      ? new Tensor(rows.zeroPoints as Uint8Array, groupsShape)
      : null;
  }

  /** The float weights the codes stand for, `(code − offset) · scale`, f32 [out, in]. */
  dequantize(): Tensor {
    return new Tensor(dequantizeInt4(this.makeKernelWeight()), [
      this.outFeatures,
      this.inFeatures,
    ]);
  }

  /**
   * `input @ dequant(W)ᵀ + bias` for input [..., in] in f16, bf16 or f32;
   * the result has the input's dtype.
   */
  async forward(input: Tensor): Promise<Tensor> {
    if (!isFloatDType(input.dtype)) {
      throw new TypeError(
        `W4A16LinearLayer takes ${"f16, bf16 or f32"} activations, got ${input.dtype}`,
      );
    }
    return await this.runRows(
      input,
      (backend, m, w, bias) =>
        backend.linearInt4(
          input.data as Activations,
          input.dtype as FloatDType,
          m,
          w,
          bias,
        ),
    );
  }

  /** The backend's view of the packed codes. */
  protected makeKernelWeight(): Int4Weight {
    return {
      packed: this.int4Weights.data as Uint8Array,
      scales: this.scales.data as Float32Array,
      zeroPoints: (this.zeroPoints?.data as Uint8Array | undefined) ?? null,
      n: this.outFeatures,
      k: this.inFeatures,
      groupSize: this.groupSize,
    };
  }
}
