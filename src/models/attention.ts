/**
 * {@linkcode Attention}: multi-head causal self-attention with grouped-query
 * heads, rotary positions, a sliding window and score soft-capping, over a
 * {@linkcode KVCache}.
 *
 * @module
 */

import { Module } from "../module.ts";
import { Tensor } from "../tensor.ts";
import type { KVCache } from "./kv_cache.ts";
import { isMatmulLayer, type MatmulLayer, runLinear } from "./linear_call.ts";
import type { RotaryEmbedding } from "./rope.ts";

/** Child names of the projections: separate q/k/v, or one fused qkv (Phi-3, GPT-2). */
export type AttentionProjections =
  | { q: string; k: string; v: string; o: string }
  | {
    qkv: string;
    o: string;
    /**
     * CodeGen's fused layout: the output is `mpNum` chunks, each holding a
     * slice of q, then v, then k. Absent: all of q, then k, then v.
     */
    mpNum?: number;
  };

// CodeGen's qkv rows [mp chunks × (q, v, k) slices] → separate q, k, v [n, width].
function splitMp(
  qkv: Float32Array,
  n: number,
  width: number,
  mp: number,
): [Float32Array, Float32Array, Float32Array] {
  const local = width / mp;
  const q = new Float32Array(n * width);
  const k = new Float32Array(n * width);
  const v = new Float32Array(n * width);
  for (let t = 0; t < n; t++) {
    for (let c = 0; c < mp; c++) {
      const src = t * 3 * width + c * 3 * local;
      const dst = t * width + c * local;
      q.set(qkv.subarray(src, src + local), dst);
      v.set(qkv.subarray(src + local, src + 2 * local), dst);
      k.set(qkv.subarray(src + 2 * local, src + 3 * local), dst);
    }
  }
  return [q, k, v];
}

/** The shape of an attention layer. */
export interface AttentionOptions {
  /** Query heads. */
  numHeads: number;
  /** Key/value heads (divides `numHeads`). */
  numKvHeads: number;
  /** Width of a head. */
  headDim: number;
  /** Factor on q·k. */
  scale: number;
  /** Scores become `c · tanh(s / c)`, or null. */
  softcap: number | null;
  /** How many most recent positions a query sees (itself included), or null for all. */
  slidingWindow: number | null;
  /** Child names of the projections. */
  projections: AttentionProjections;
  /** The class name shown when printed (`LlamaAttention`). */
  name?: string;
}

/** What one attention call needs besides its input. */
export interface AttentionContext {
  /** Position of the first input row. */
  pos: number;
  /** This layer's cache (rows [0, pos) already filled). */
  cache: KVCache;
  /** Rotary embedding, or null for learned positions. */
  rope: RotaryEmbedding | null;
  /** Activation dtype for the 16-bit-activation layers. */
  act16: "f16" | "bf16";
  /** Scratch for one row of scores, at least the cache's capacity. */
  scores: Float32Array;
}

/**
 * Causal self-attention. The projections are children (`Linear` or
 * quantized layers, looked up at every call so the `Quantizer` can swap
 * them); keys and values go to the cache, queries attend over it.
 *
 * @example One block's attention of a loaded model
 * ```ts
 * import { Attention, loadCausalLM } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const lm = await loadCausalLM("models/tinystories-656k");
 * const attn = lm.model.getModule("model.layers.0.self_attn") as Attention;
 * assert.deepEqual([attn.options.numHeads, attn.options.numKvHeads, attn.options.headDim], [8, 4, 16]);
 * lm.dispose();
 * ```
 */
export class Attention extends Module {
  /** The layer's shape and options. */
  readonly options: Readonly<AttentionOptions>;

  /** Makes an attention layer with no projections yet (set them with `setChild`). */
  constructor(options: AttentionOptions) {
    super();
    if (options.numHeads % options.numKvHeads !== 0) {
      throw new RangeError(
        `${options.numHeads} query heads cannot share ${options.numKvHeads} key/value heads`,
      );
    }
    this.options = options;
  }

  /** The projection child called `name`. */
  projection(name: string): MatmulLayer {
    const m = this.getChild(name);
    if (!isMatmulLayer(m)) {
      throw new Error(`Attention has no projection "${name}"`);
    }
    return m;
  }

  /** Runs attention on x [n, hidden] (f32) at positions [pos, pos + n); returns [n, hidden] f32. */
  async forward(x: Tensor, ctx: AttentionContext): Promise<Tensor> {
    const { numHeads, numKvHeads, headDim, projections: p } = this.options;
    const n = x.shape[0]!;
    const qw = numHeads * headDim, kvw = numKvHeads * headDim;
    let q: Float32Array, k: Float32Array, v: Float32Array;
    let qStride = qw, kvStride = kvw, kOff = 0, vOff = 0;
    if ("qkv" in p) {
      const qkv = (await runLinear(this.projection(p.qkv), x, ctx.act16))
        .data as Float32Array;
      if (p.mpNum) {
        [q, k, v] = splitMp(qkv, n, qw, p.mpNum);
      } else {
        q = k = v = qkv;
        qStride = kvStride = qw + 2 * kvw;
        kOff = qw;
        vOff = qw + kvw;
      }
    } else {
      q = (await runLinear(this.projection(p.q), x, ctx.act16))
        .data as Float32Array;
      k = (await runLinear(this.projection(p.k), x, ctx.act16))
        .data as Float32Array;
      v = (await runLinear(this.projection(p.v), x, ctx.act16))
        .data as Float32Array;
    }
    if (ctx.rope) {
      for (let t = 0; t < n; t++) {
        ctx.rope.rotate(q, t * qStride, numHeads, ctx.pos + t);
        ctx.rope.rotate(k, t * kvStride + kOff, numKvHeads, ctx.pos + t);
      }
    }
    ctx.cache.write(ctx.pos, k, v, n, kvStride, kOff, vOff);
    const out = new Float32Array(n * qw);
    this.#attend(q, qStride, n, ctx, out);
    return await runLinear(
      this.projection(p.o),
      new Tensor(out, [n, qw]),
      ctx.act16,
    );
  }

  // out[t, h] = Σ_j softmax_j(s(q[t, h], k[j, g])) · v[j, g] over the positions
  // j ≤ pos + t inside the window, g the key/value head of query head h.
  #attend(
    q: Float32Array,
    qStride: number,
    n: number,
    ctx: AttentionContext,
    out: Float32Array,
  ): void {
    const { numHeads, numKvHeads, headDim, scale, softcap, slidingWindow } =
      this.options;
    const { keys, values, width } = ctx.cache;
    const scores = ctx.scores;
    const group = numHeads / numKvHeads;
    for (let t = 0; t < n; t++) {
      const p = ctx.pos + t;
      const start = slidingWindow === null
        ? 0
        : Math.max(0, p - slidingWindow + 1);
      for (let h = 0; h < numHeads; h++) {
        const qo = t * qStride + h * headDim;
        const ko = Math.floor(h / group) * headDim;
        let max = -Infinity;
        for (let j = start; j <= p; j++) {
          const kj = j * width + ko;
          let dot = 0;
          for (let d = 0; d < headDim; d++) dot += q[qo + d]! * keys[kj + d]!;
          let s = Math.fround(Math.fround(dot) * scale);
          if (softcap !== null) s = softcap * Math.tanh(s / softcap);
          scores[j] = s;
          if (scores[j]! > max) max = scores[j]!;
        }
        let sum = 0;
        for (let j = start; j <= p; j++) {
          const e = Math.exp(scores[j]! - max);
          scores[j] = e;
          sum += e;
        }
        const oo = t * numHeads * headDim + h * headDim;
        for (let j = start; j <= p; j++) {
          const w = scores[j]! / sum;
          const vj = j * width + ko;
          for (let d = 0; d < headDim; d++) {
            out[oo + d] = out[oo + d]! + w * values[vj + d]!;
          }
        }
      }
    }
  }

  /** The class name given in the options. */
  override typeName(): string {
    return this.options.name ?? "Attention";
  }
}
