/**
 * The norms: {@linkcode RMSNorm} (Llama family, Gemma's `1 + w` variant) and
 * {@linkcode LayerNorm} (GPT-2, OPT). Both normalise each row of an f32
 * matrix in place, in f32 as transformers does.
 *
 * @module
 */

import { Module } from "../module.ts";
import { materialize, Tensor, type TensorSource } from "../tensor.ts";

/** What the runtime asks of a norm. */
export interface Norm extends Module {
  /** Normalises the `rows` rows of `x` [rows, dim] in place. */
  apply(x: Float32Array, rows: number): Promise<void>;
}

/** Options of {@linkcode RMSNorm}. */
export interface RMSNormOptions {
  /** Added to the mean square (default 1e-6). */
  eps?: number;
  /** Scale by `1 + weight` (Gemma stores the weight minus one). */
  addOne?: boolean;
  /** The class name shown when printed (`LlamaRMSNorm`). */
  name?: string;
}

/**
 * `y = x / √(mean(x²) + eps) · w` per row (Gemma: `· (1 + w)`).
 *
 * @example
 * ```ts
 * import { RMSNorm, Tensor } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const norm = new RMSNorm(new Tensor(new Float32Array([1, 2]), [2]), { eps: 0 });
 * const x = new Float32Array([3, -3]);
 * await norm.apply(x, 1);
 * assert.deepEqual([...x], [1, -2]);
 * ```
 */
export class RMSNorm extends Module implements Norm {
  /** Added to the mean square. */
  readonly eps: number;
  /** Whether the scale is `1 + weight`. */
  readonly addOne: boolean;
  readonly #name: string;
  #scale: { source: TensorSource; f32: Float32Array } | null = null;

  /** Wraps `weight` [dim]. */
  constructor(weight: TensorSource, options: RMSNormOptions = {}) {
    super();
    this.eps = options.eps ?? 1e-6;
    this.addOne = options.addOne ?? false;
    this.#name = options.name ?? "RMSNorm";
    this.setTensor("weight", weight);
  }

  /** The stored weight [dim]. */
  get weight(): TensorSource {
    return this.getTensor("weight")!;
  }

  /** The per-feature scale in f32 (`1 + w` for Gemma). */
  async scale(): Promise<Float32Array> {
    const source = this.weight;
    if (this.#scale?.source !== source) {
      const w = Float32Array.from((await materialize(source)).toF32Array());
      if (this.addOne) { for (let i = 0; i < w.length; i++) w[i] = 1 + w[i]!; }
      this.#scale = { source, f32: w };
    }
    return this.#scale.f32;
  }

  /** Normalises the `rows` rows of `x` in place. */
  async apply(x: Float32Array, rows: number): Promise<void> {
    const w = await this.scale();
    const dim = w.length;
    for (let r = 0; r < rows; r++) {
      const o = r * dim;
      let ss = 0;
      for (let j = 0; j < dim; j++) ss += x[o + j]! * x[o + j]!;
      const inv = Math.fround(1 / Math.sqrt(Math.fround(ss / dim) + this.eps));
      for (let j = 0; j < dim; j++) {
        x[o + j] = w[j]! * Math.fround(x[o + j]! * inv);
      }
    }
  }

  /** Runs the norm on an f32 tensor [..., dim] (a copy). */
  async forward(x: Tensor): Promise<Tensor> {
    const y = Float32Array.from(x.toF32Array());
    await this.apply(y, y.length / this.weight.shape[0]!);
    return new Tensor(y, x.shape);
  }

  /** The class name given at construction. */
  override typeName(): string {
    return this.#name;
  }

  /** `(dim,), eps=…`, as PyTorch prints it. */
  override extraRepr(): string {
    return `(${this.weight.shape[0]},), eps=${pyFloat(this.eps)}`;
  }
}

/**
 * `y = (x − mean) / √(var + eps) · w + b` per row.
 *
 * @example
 * ```ts
 * import { LayerNorm, Tensor } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const norm = new LayerNorm(
 *   new Tensor(new Float32Array([1, 1]), [2]),
 *   new Tensor(new Float32Array([0, 1]), [2]),
 *   { eps: 0 },
 * );
 * const x = new Float32Array([1, 3]);
 * await norm.apply(x, 1);
 * assert.deepEqual([...x], [-1, 2]);
 * ```
 */
export class LayerNorm extends Module implements Norm {
  /** Added to the variance. */
  readonly eps: number;
  #params:
    | { w: TensorSource; b: Float32Array | null; wf: Float32Array }
    | null = null;

  /** Wraps `weight` [dim] and `bias` [dim] (or null). */
  constructor(
    weight: TensorSource,
    bias: TensorSource | null,
    options: { eps?: number } = {},
  ) {
    super();
    this.eps = options.eps ?? 1e-5;
    this.setTensor("weight", weight);
    this.setTensor("bias", bias);
  }

  async #load(): Promise<{ wf: Float32Array; b: Float32Array | null }> {
    const w = this.getTensor("weight")!;
    if (this.#params?.w !== w) {
      const bias = this.getTensor("bias") ?? null;
      this.#params = {
        w,
        wf: (await materialize(w)).toF32Array(),
        b: bias ? (await materialize(bias)).toF32Array() : null,
      };
    }
    return this.#params;
  }

  /** Normalises the `rows` rows of `x` in place. */
  async apply(x: Float32Array, rows: number): Promise<void> {
    const { wf, b } = await this.#load();
    const dim = wf.length;
    for (let r = 0; r < rows; r++) {
      const o = r * dim;
      let sum = 0;
      for (let j = 0; j < dim; j++) sum += x[o + j]!;
      const mean = Math.fround(sum / dim);
      let sq = 0;
      for (let j = 0; j < dim; j++) {
        const d = Math.fround(x[o + j]! - mean);
        sq += d * d;
      }
      const inv = Math.fround(1 / Math.sqrt(Math.fround(sq / dim) + this.eps));
      for (let j = 0; j < dim; j++) {
        const y = Math.fround(Math.fround(x[o + j]! - mean) * inv) * wf[j]!;
        x[o + j] = b ? Math.fround(y) + b[j]! : y;
      }
    }
  }

  /** Runs the norm on an f32 tensor [..., dim] (a copy). */
  async forward(x: Tensor): Promise<Tensor> {
    const y = Float32Array.from(x.toF32Array());
    await this.apply(y, y.length / this.getTensor("weight")!.shape[0]!);
    return new Tensor(y, x.shape);
  }

  /** `(dim,), eps=…, elementwise_affine=True`, as PyTorch prints it. */
  override extraRepr(): string {
    return `(${this.getTensor("weight")!.shape[0]},), eps=${
      pyFloat(this.eps)
    }, elementwise_affine=True`;
  }
}

/** A number as Python prints a float (`1e-06`, `1e-05`, `0.5`). */
function pyFloat(v: number): string {
  if (v !== 0 && Math.abs(v) < 1e-4) {
    const [m, e] = v.toExponential().split("e");
    const exp = Number(e);
    return `${m}e${exp < 0 ? "-" : "+"}${
      String(Math.abs(exp)).padStart(2, "0")
    }`;
  }
  return Number.isInteger(v) ? `${v}.0` : String(v);
}
