/**
 * {@linkcode RotaryEmbedding}: rotary position embeddings (RoPE) with
 * transformers' frequencies — `rope_theta`, `linear` and `llama3` scaling,
 * partial rotary — in the NeoX layout (pairs `i, i + d/2`, Llama & co) or
 * the interleaved one (pairs `2i, 2i + 1`, GPT-J).
 *
 * @module
 */

import { Module } from "../module.ts";
import type { Positions, RopeScaling } from "./config.ts";

type Rope = Extract<Positions, { kind: "rope" }>;

/**
 * The inverse frequencies of `rotaryDim` rotating dimensions, in f32 as
 * transformers computes them: `1 / θ^(2i/d)`, then the scaling.
 *
 * @example
 * ```ts
 * import { ropeInverseFrequencies } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const f = ropeInverseFrequencies(4, 10000, null);
 * assert.deepEqual([...f], [1, 0.009999999776482582]);
 * ```
 */
export function ropeInverseFrequencies(
  rotaryDim: number,
  theta: number,
  scaling: RopeScaling | null,
): Float32Array {
  const half = rotaryDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    inv[i] = 1 / Math.fround(theta ** Math.fround((2 * i) / rotaryDim));
  }
  if (scaling?.type === "linear") {
    for (let i = 0; i < half; i++) inv[i] = inv[i]! / scaling.factor;
  } else if (scaling?.type === "llama3") {
    const { factor, lowFreqFactor, highFreqFactor, originalMaxPositions } =
      scaling;
    const lowWavelen = originalMaxPositions / lowFreqFactor;
    const highWavelen = originalMaxPositions / highFreqFactor;
    for (let i = 0; i < half; i++) {
      const f = inv[i]!;
      const wavelen = (2 * Math.PI) / f;
      if (wavelen > lowWavelen) inv[i] = f / factor;
      else if (wavelen >= highWavelen) {
        const smooth = (originalMaxPositions / wavelen - lowFreqFactor) /
          (highFreqFactor - lowFreqFactor);
        inv[i] = (1 - smooth) * (f / factor) + smooth * f;
      }
    }
  }
  return inv;
}

/**
 * Rotates query and key heads by their position. The cos/sin table is
 * filled once for the context it is asked for, never per token.
 *
 * @example Position 0 leaves a head unchanged
 * ```ts
 * import { RotaryEmbedding } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const rope = new RotaryEmbedding(4, { kind: "rope", theta: 10000, rotaryDim: 4, scaling: null, layout: "neox" });
 * const x = new Float32Array([1, 2, 3, 4]);
 * rope.rotate(x, 0, 1, 0);
 * assert.deepEqual([...x], [1, 2, 3, 4]);
 * ```
 */
export class RotaryEmbedding extends Module {
  /** Width of a head. */
  readonly headDim: number;
  /** Dimensions that rotate (the first `rotaryDim` of each head). */
  readonly rotaryDim: number;
  /** Pair layout. */
  readonly layout: "neox" | "interleaved";
  /** The inverse frequencies, f32 [rotaryDim / 2]. */
  readonly invFreq: Float32Array;
  readonly #name: string;
  #cos = new Float32Array(0);
  #sin = new Float32Array(0);
  #positions = 0;

  /** Builds the frequencies of a `rope` position config for heads of `headDim`. */
  constructor(headDim: number, rope: Rope, name = "RotaryEmbedding") {
    super();
    this.headDim = headDim;
    this.rotaryDim = rope.rotaryDim;
    this.layout = rope.layout;
    this.invFreq = ropeInverseFrequencies(
      rope.rotaryDim,
      rope.theta,
      rope.scaling,
    );
    this.#name = name;
  }

  /** Makes the cos/sin table cover positions [0, n). */
  reserve(n: number): void {
    if (n <= this.#positions) return;
    const half = this.rotaryDim / 2;
    const cos = new Float32Array(n * half);
    const sin = new Float32Array(n * half);
    for (let p = 0; p < n; p++) {
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(p * this.invFreq[i]!);
        cos[p * half + i] = Math.cos(angle);
        sin[p * half + i] = Math.sin(angle);
      }
    }
    this.#cos = cos;
    this.#sin = sin;
    this.#positions = n;
  }

  /** cos and sin of every frequency at position `pos` ([rotaryDim / 2] each, views). */
  angles(pos: number): { cos: Float32Array; sin: Float32Array } {
    this.reserve(pos + 1);
    const half = this.rotaryDim / 2;
    return {
      cos: this.#cos.subarray(pos * half, (pos + 1) * half),
      sin: this.#sin.subarray(pos * half, (pos + 1) * half),
    };
  }

  /** Rotates the `heads` heads stored from `offset` in `x` by position `pos`, in place. */
  rotate(x: Float32Array, offset: number, heads: number, pos: number): void {
    const { cos, sin } = this.angles(pos);
    const half = this.rotaryDim / 2;
    for (let h = 0; h < heads; h++) {
      const o = offset + h * this.headDim;
      for (let i = 0; i < half; i++) {
        const [a, b] = this.layout === "neox"
          ? [o + i, o + i + half]
          : [o + 2 * i, o + 2 * i + 1];
        const x1 = x[a]!, x2 = x[b]!, c = cos[i]!, s = sin[i]!;
        x[a] = Math.fround(x1 * c) - Math.fround(x2 * s);
        x[b] = Math.fround(x2 * c) + Math.fround(x1 * s);
      }
    }
  }

  /** The class name given at construction. */
  override typeName(): string {
    return this.#name;
  }
}
