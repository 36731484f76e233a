/**
 * {@linkcode QuantizedLinearLayer}: what every quantized Linear layer (int8
 * and 4-bit) is — its sizes, the bias it keeps in float, `quantize()`
 * through its layout's row quantizer, running a backend kernel over the rows
 * of an input, and the one kernel-side weight view per set of tensors that a
 * backend keys its caches on (released by `dispose()`).
 *
 * @module
 */

import { outShape, rowsOf } from "../forward_shape.ts";
import type { Backend, Int4Weight, Int8Weight } from "../backend/backend.ts";
import { activeBackend } from "../backend/select.ts";
import { f32ToFloatArray, type FloatDType, isFloatDType } from "../dtype.ts";
import { Module } from "../module.ts";
import { Tensor } from "../tensor.ts";
import type { StoredRows, WeightLayout } from "./layouts.ts";

/** Options of the quantized layers' constructors (TinyQ's `bias`, `dtype`). */
export interface QuantizedLinearOptions {
  /** Whether the layer has a bias (default true). */
  bias?: boolean;
  /** The float dtype of the bias (default f32). */
  dtype?: FloatDType;
}

/** Options of {@linkcode QuantizedLinearLayer.quantize}. */
export interface QuantizeOptions {
  /** Store zero points (per row for int8, per group for 4-bit). Default false. */
  asymmetric?: boolean;
  /** The weight's name, for error messages (e.g. the checkpoint tensor name). */
  name?: string;
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
 * The kernel-side view of a quantized layer's weight. Its identity is the
 * backend's cache key (GPU buffers), so it must stay the same object across
 * calls while the layer's tensors do, and be released when they change.
 */
class KernelWeight<W extends Int8Weight | Int4Weight> {
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

/**
 * The base of the quantized Linear layers. Its tensors are named as in the
 * native file format: the layout's weight tensor (`int8_weights` or
 * `int4_weights`), `scales`, `zero_points` (asymmetric only) and `bias`.
 * A subclass says how its tensors are checked and viewed by a kernel, and
 * what its forward runs.
 */
export abstract class QuantizedLinearLayer<
  W extends Int8Weight | Int4Weight = Int8Weight | Int4Weight,
> extends Module {
  /** Input features. */
  readonly inFeatures: number;
  /** Output features. */
  readonly outFeatures: number;
  #kernel = new KernelWeight<W>();

  /** Sets the sizes; the subclass creates its buffers, then calls {@linkcode QuantizedLinearLayer.initBias}. */
  constructor(inFeatures: number, outFeatures: number) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
  }

  /** How this layer's weights are stored, and the row quantizer that fills them. */
  abstract get layout(): WeightLayout;

  /** Inputs per group for group-wise layouts, else undefined. */
  get groupSize(): number | undefined {
    return undefined;
  }

  /** A new layer's bias: zeros [out] (f32 unless `dtype`), or none for `bias: false`. */
  protected initBias(options: QuantizedLinearOptions): void {
    this.setTensor(
      "bias",
      options.bias === false
        ? null
        : Tensor.zeros([this.outFeatures], options.dtype ?? "f32"),
    );
  }

  /** A buffer that may be unset (zero points, bias). */
  protected optionalBuffer(name: string): Tensor | null {
    return (this.getTensor(name) as Tensor | null | undefined) ?? null;
  }

  /** The bias, [out] in any float dtype, or null. */
  get bias(): Tensor | null {
    return this.optionalBuffer("bias");
  }
  set bias(t: Tensor | null) {
    if (t && (!isFloatDType(t.dtype) || t.size !== this.outFeatures)) {
      throw new TypeError(
        `bias must be a float [${this.outFeatures}], got ${t.dtype} [${
          t.shape.join(", ")
        }]`,
      );
    }
    this.setTensor("bias", t?.reshape([this.outFeatures]) ?? null);
  }

  /** Whether the weights have zero points. */
  get asymmetric(): boolean {
    return this.optionalBuffer("zero_points") !== null;
  }

  /** The stored tensors' data: what a checkpoint writer encodes. */
  storedRows(): StoredRows {
    const t = this.getTensor(this.layout.weightsName) as Tensor;
    return {
      weights: t.data as Int8Array | Uint8Array,
      scales: (this.getTensor("scales") as Tensor).data as Float32Array,
      zeroPoints: (this.optionalBuffer("zero_points")?.data as
        | Int8Array
        | Uint8Array
        | undefined) ?? null,
    };
  }

  /**
   * Quantizes float weights [out, in] (f32, f16 or bf16) into this layer's
   * buffers: symmetric by default, with zero points when `asymmetric`.
   */
  quantize(weights: Tensor, options: QuantizeOptions = {}): void {
    const name = options.name ?? "weights";
    const dtype = checkWeightsToQuantize(
      weights,
      this.outFeatures,
      this.inFeatures,
      name,
    );
    this.store(
      this.layout.quantizeRows(
        weights.data,
        dtype,
        this.outFeatures,
        this.inFeatures,
        {
          asymmetric: options.asymmetric ?? false,
          groupSize: this.groupSize ?? null,
          name,
        },
      ),
    );
  }

  /** Puts the result of the layout's row quantizer in the layer's buffers. */
  protected abstract store(rows: StoredRows): void;

  /** The float weights the quantized values stand for, f32 [out, in]. */
  abstract dequantize(): Tensor;

  /** Runs the layer on an input [..., in]. */
  abstract forward(input: Tensor): Promise<Tensor>;

  /** A new kernel-side view of the current tensors. */
  protected abstract makeKernelWeight(): W;

  /** The kernel-side view of the current tensors, the same object while they are unchanged. */
  protected kernelWeight(): W {
    return this.#kernel.of(
      [
        this.getTensor(this.layout.weightsName),
        this.getTensor("scales"),
        this.getTensor("zero_points"),
      ],
      () => this.makeKernelWeight(),
    );
  }

  #adopted = false;

  /**
   * Once, after the first forward on a backend that keeps its own copy of
   * an int8 weight (the CPU kernels' shared memory): takes that copy's views
   * in place of this layer's int8_weights, scales and zero_points tensors,
   * so the weight lives once (the original arrays can be collected).
   */
  async #adopt(backend: Backend, weight: W): Promise<void> {
    this.#adopted = true;
    const adopt = (backend as {
      adoptWeight?: (w: Int8Weight) => Promise<
        {
          q: Int8Array;
          scales: Float32Array;
          zeroPoints: Int8Array | null;
        } | null
      >;
    }).adoptWeight;
    if (typeof adopt !== "function" || !("q" in weight)) return;
    const views = await adopt.call(backend, weight);
    // The tensors may have been replaced while the call ran.
    if (!views || this.kernelWeight() !== weight) return;
    const { n, k } = weight;
    this.setTensor(this.layout.weightsName, new Tensor(views.q, [n, k], "i8"));
    this.setTensor("scales", new Tensor(views.scales, [n], "f32"));
    if (views.zeroPoints) {
      this.setTensor("zero_points", new Tensor(views.zeroPoints, [n], "i8"));
    }
  }

  /** Frees the backend's copy of the weights before they are replaced. */
  protected releaseKernelWeight(): void {
    this.#kernel.release();
  }

  /**
   * Runs `kernel` (a backend call on the layer's weight view) over the rows
   * of `input` [..., in], with the bias; the result is [..., out] in the
   * input's dtype.
   */
  protected runRows(
    input: Tensor,
    kernel: (
      backend: Backend,
      m: number,
      weight: W,
      bias: Float32Array | null,
    ) => Promise<Float32Array>,
  ): Promise<Tensor> {
    return forwardRows(
      this.constructor.name,
      input,
      this.inFeatures,
      this.outFeatures,
      this.bias,
      async (m, bias) => {
        const backend = await activeBackend();
        const weight = this.kernelWeight();
        const y = await kernel(backend, m, weight, bias);
        if (!this.#adopted) await this.#adopt(backend, weight);
        return y;
      },
    );
  }

  /** `in_features=…, out_features=…, bias=…` (+ `group_size=…` for group-wise, `asymmetric=True` with zero points), as PyTorch prints a layer. */
  override extraRepr(): string {
    const g = this.groupSize;
    return `in_features=${this.inFeatures}, out_features=${this.outFeatures}, bias=${
      this.bias ? "True" : "False"
    }${g !== undefined ? `, group_size=${g}` : ""}${
      this.asymmetric ? ", asymmetric=True" : ""
    }`;
  }

  /** Frees the backend's copy of the weights (GPU buffers). */
  override dispose(): void {
    this.#kernel.release();
    super.dispose();
  }
}
