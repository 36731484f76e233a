/**
 * {@linkcode TiedLMHead}: the LM head of a model with tied embeddings, which
 * reads the token embedding's table (no copy of it).
 *
 * @module
 */

import { Module } from "../module.ts";
import { Tensor } from "../tensor.ts";
import { type Embedding, readRow } from "./embedding.ts";

/**
 * `logits = x @ Eᵀ` with `E` the token embedding's table in its stored
 * dtype, one table row widened at a time. It holds no tensor of its own,
 * so the tree's tensors are the checkpoint's, and the `Quantizer` leaves it
 * alone (it is not a `Linear`).
 *
 * @example
 * ```ts
 * import { Embedding, Tensor, TiedLMHead } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const emb = new Embedding(new Tensor(new Float32Array([1, 0, 0, 2, 1, 1]), [3, 2]));
 * const head = new TiedLMHead(emb, "embed_tokens");
 * const y = await head.forward(new Tensor(new Float32Array([3, 4]), [1, 2]));
 * assert.deepEqual([...y.data], [3, 8, 7]);
 * ```
 */
export class TiedLMHead extends Module {
  /** The embedding whose table is the weight. */
  readonly embedding: Embedding;
  /** The embedding's path, for printing. */
  readonly tiedTo: string;

  /** Ties a head to `embedding` (found at `tiedTo` in the tree). */
  constructor(embedding: Embedding, tiedTo: string) {
    super();
    this.embedding = embedding;
    this.tiedTo = tiedTo;
  }

  /** Input features (the embedding width). */
  get inFeatures(): number {
    return this.embedding.embeddingDim;
  }

  /** Output features (the vocabulary). */
  get outFeatures(): number {
    return this.embedding.numEmbeddings;
  }

  /** `x @ Eᵀ` for f32 x [m, dim]; f32 result [m, vocab]. */
  async forward(x: Tensor): Promise<Tensor> {
    const table = await this.embedding.table();
    const k = this.inFeatures, n = this.outFeatures;
    const xs = x.toF32Array();
    const m = xs.length / k;
    const y = new Float32Array(m * n);
    const row = new Float32Array(k);
    for (let v = 0; v < n; v++) {
      readRow(table, v, row, 0);
      for (let r = 0; r < m; r++) {
        let dot = 0;
        const o = r * k;
        for (let j = 0; j < k; j++) dot += xs[o + j]! * row[j]!;
        y[r * n + v] = dot;
      }
    }
    return new Tensor(y, [...x.shape.slice(0, -1), n]);
  }

  /** Shown as PyTorch shows a tied Linear, plus what it is tied to. */
  override typeName(): string {
    return "Linear";
  }

  /** `in_features=…, out_features=…, bias=False, tied=…`. */
  override extraRepr(): string {
    return `in_features=${this.inFeatures}, out_features=${this.outFeatures}, bias=False, tied=${this.tiedTo}`;
  }
}
