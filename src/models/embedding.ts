/**
 * {@linkcode Embedding}: a token (or position) table kept in its stored dtype,
 * whose rows are widened to f32 only when gathered.
 *
 * @module
 */

import { Module } from "../module.ts";
import { materialize, type Tensor, type TensorSource } from "../tensor.ts";

/**
 * A lookup table `weight` [num, dim] (f32, f16 or bf16). {@linkcode Embedding.gather}
 * copies the rows of some ids into an f32 buffer; the table itself is never
 * converted, so a bf16 table costs 2 bytes per value in memory.
 *
 * @example
 * ```ts
 * import { Embedding, Tensor } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const table = new Tensor(new Float16Array([1, 2, 3, 4, 5, 6]), [3, 2]);
 * const emb = new Embedding(table);
 * const out = new Float32Array(4);
 * await emb.gather([2, 0], out);
 * assert.deepEqual([...out], [5, 6, 1, 2]);
 * assert.equal(String(emb), "Embedding(3, 2)");
 * ```
 */
export class Embedding extends Module {
  /** Rows of the table. */
  readonly numEmbeddings: number;
  /** Width of a row. */
  readonly embeddingDim: number;
  #table: Tensor | null = null;

  /** Wraps `weight` [num, dim] (in memory or lazy; read on first use). */
  constructor(weight: TensorSource) {
    super();
    if (weight.shape.length !== 2) {
      throw new RangeError(
        `Embedding weight must be 2-D, got [${weight.shape.join(", ")}]`,
      );
    }
    if (!["f32", "f16", "bf16"].includes(weight.dtype)) {
      throw new TypeError(
        `Embedding weight must be f32, f16 or bf16, got ${weight.dtype}`,
      );
    }
    [this.numEmbeddings, this.embeddingDim] = weight.shape as [number, number];
    this.setTensor("weight", weight);
  }

  /** The table as stored. */
  get weight(): TensorSource {
    return this.getTensor("weight")!;
  }

  /** The table in memory, in its stored dtype (read once). */
  async table(): Promise<Tensor> {
    const source = this.weight;
    if (this.#table !== source) {
      this.#table = await materialize(source);
      this.setTensor("weight", this.#table);
    }
    return this.#table;
  }

  /**
   * Writes row `ids[i]` (times `scale`) into `out` at `i · dim`, or adds it
   * to what is there when `add`. An id outside the table is a RangeError.
   */
  async gather(
    ids: readonly number[],
    out: Float32Array,
    options: { scale?: number; add?: boolean } = {},
  ): Promise<void> {
    const t = await this.table();
    const dim = this.embeddingDim;
    const scale = options.scale ?? 1;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= this.numEmbeddings) {
        throw new RangeError(
          `Token id ${id} is out of range: the table has ${this.numEmbeddings} rows`,
        );
      }
      readRow(t, id, out, i * dim, scale, options.add ?? false);
    }
  }

  /** `num, dim`, as PyTorch prints an Embedding. */
  override extraRepr(): string {
    return `${this.numEmbeddings}, ${this.embeddingDim}`;
  }
}

let scratch = new Float32Array(0);

/** Row `r` of a float matrix `t` as f32 (× scale), written or added into `out` at `offset`. */
export function readRow(
  t: Tensor,
  r: number,
  out: Float32Array,
  offset: number,
  scale = 1,
  add = false,
): void {
  const dim = t.shape[1]!;
  const base = r * dim;
  const dst = out.subarray(offset, offset + dim);
  if (t.dtype === "bf16") {
    // bf16 bits are the top half of the f32 bits: widen as u32, straight
    // into `out` when nothing is scaled or added.
    const direct = !add && scale === 1;
    if (!direct && scratch.length < dim) scratch = new Float32Array(dim);
    const target = direct ? dst : scratch.subarray(0, dim);
    const bits = new Uint32Array(target.buffer, target.byteOffset, dim);
    const src = t.data as Uint16Array;
    for (let j = 0; j < dim; j++) bits[j] = src[base + j]! << 16;
    if (!direct) combine(dst, target, scale, add);
    return;
  }
  const row = (t.data as Float32Array | Float16Array).subarray(
    base,
    base + dim,
  );
  if (!add && scale === 1) {
    dst.set(row);
    return;
  }
  combine(dst, row, scale, add);
}

function combine(
  dst: Float32Array,
  row: Float32Array | Float16Array,
  scale: number,
  add: boolean,
): void {
  for (let j = 0; j < dst.length; j++) {
    const v = scale === 1 ? row[j]! : Math.fround(row[j]! * scale);
    dst[j] = add ? dst[j]! + v : v;
  }
}
