/**
 * Choosing the next token from a row of logits, with exactly the semantics
 * every engine shares (the WebGPU engine runs the same steps in a kernel):
 *
 * - temperature 0: the argmax, the lowest id on ties;
 * - otherwise `softmax(logits / T)`, then keep the `topK` most probable (0:
 *   all), then keep the smallest prefix of that descending order whose
 *   probability mass (of the full softmax) reaches `topP`, renormalise, and
 *   pick by inverse CDF with a uniform `u` in [0, 1) that the caller draws.
 *
 * Ties in the descending order go to the lower id, so the choice is a pure
 * function of (logits, params, u). The caller draws `u` from
 * {@linkcode SeededRandom}, so a seed reproduces a whole generation.
 *
 * @module
 */

import type { SamplerParams } from "./engine.ts";

export type { SamplerParams } from "./engine.ts";

/** The default sampling of `tinyq generate` and `CausalLM.generate`. */
export const DEFAULT_SAMPLING: Readonly<SamplerParams> = Object.freeze({
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
});

/**
 * Checks sampling parameters, throwing a RangeError that names the bad one:
 * temperature ≥ 0, topK a whole number ≥ 0, topP in (0, 1].
 *
 * @example
 * ```ts
 * import { checkSamplerParams } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * checkSamplerParams({ temperature: 0.7, topK: 40, topP: 0.9 });
 * assert.throws(() => checkSamplerParams({ temperature: -1, topK: 0, topP: 1 }), /temperature/);
 * ```
 */
export function checkSamplerParams(p: SamplerParams): void {
  if (!(Number.isFinite(p.temperature) && p.temperature >= 0)) {
    throw new RangeError(
      `temperature must be a number >= 0 (0 is greedy), got ${p.temperature}`,
    );
  }
  if (!(Number.isInteger(p.topK) && p.topK >= 0)) {
    throw new RangeError(
      `top-k must be a whole number >= 0 (0 keeps every token), got ${p.topK}`,
    );
  }
  if (!(p.topP > 0 && p.topP <= 1)) {
    throw new RangeError(`top-p must be in (0, 1], got ${p.topP}`);
  }
}

/**
 * The index of the largest value, the lowest index on ties. A NaN anywhere
 * is an error: a model that produces NaN logits is broken, and picking a
 * token anyway would hide it.
 *
 * @example
 * ```ts
 * import { argmax } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.equal(argmax(new Float32Array([1, 3, 3, 2])), 1);
 * ```
 */
export function argmax(logits: Float32Array): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i]!;
    if (v > bestValue) {
      bestValue = v;
      best = i;
    } else if (v !== v) {
      throw new RangeError(`NaN in the logits (token id ${i})`);
    }
  }
  return best;
}

// Larger value first; on a tie the lower id first.
function before(v: Float32Array, a: number, b: number): boolean {
  return v[a]! > v[b]! || (v[a] === v[b] && a < b);
}

/** The ids of the `k` largest logits in descending order (ties: lower id). */
function topIds(logits: Float32Array, k: number): number[] {
  const n = logits.length;
  if (k <= 0 || k >= n) {
    const ids = Array.from({ length: n }, (_, i) => i);
    return ids.sort((a, b) => logits[b]! - logits[a]! || a - b);
  }
  // A min-heap of the best k so far: O(n log k) instead of sorting the vocab.
  const heap: number[] = [];
  const worse = (a: number, b: number) => before(logits, b, a);
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && worse(heap[l]!, heap[m]!)) m = l;
      if (r < heap.length && worse(heap[r]!, heap[m]!)) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m]!, heap[i]!];
      i = m;
    }
  };
  for (let id = 0; id < n; id++) {
    if (heap.length < k) {
      heap.push(id);
      let i = heap.length - 1;
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (!worse(heap[i]!, heap[parent]!)) break;
        [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
        i = parent;
      }
    } else if (before(logits, id, heap[0]!)) {
      heap[0] = id;
      down(0);
    }
  }
  return heap.sort((a, b) => logits[b]! - logits[a]! || a - b);
}

/**
 * Picks the next token from `logits` ([vocab], f32) under `params` with the
 * uniform random number `u` in [0, 1) (see the module doc for the exact
 * steps). NaN logits are an error.
 *
 * @example Greedy, and sampling with a fixed u
 * ```ts
 * import { sampleToken } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const logits = new Float32Array([0, 2, 1]);
 * assert.equal(sampleToken(logits, { temperature: 0, topK: 0, topP: 1 }, 0.99), 1);
 * // top-k 1 leaves only the argmax, whatever u is
 * assert.equal(sampleToken(logits, { temperature: 1, topK: 1, topP: 1 }, 0.99), 1);
 * // u near 1 picks the least likely of the kept tokens
 * assert.equal(sampleToken(logits, { temperature: 1, topK: 0, topP: 1 }, 0.999), 0);
 * ```
 */
export function sampleToken(
  logits: Float32Array,
  params: SamplerParams,
  u: number,
): number {
  if (params.temperature === 0) return argmax(logits);
  if (!(u >= 0 && u < 1)) {
    throw new RangeError(`u must be in [0, 1), got ${u}`);
  }
  const max = logits[argmax(logits)]!;
  const invT = 1 / params.temperature;
  let total = 0;
  for (let i = 0; i < logits.length; i++) {
    total += Math.exp((logits[i]! - max) * invT);
  }
  const ids = topIds(logits, params.topK);
  // The smallest prefix whose mass (of the whole softmax) reaches topP.
  const probs: number[] = [];
  let mass = 0;
  for (const id of ids) {
    const p = Math.exp((logits[id]! - max) * invT) / total;
    probs.push(p);
    mass += p;
    if (mass >= params.topP) break;
  }
  // Inverse CDF over the kept tokens, renormalised by their mass.
  const target = u * mass;
  let cumulative = 0;
  for (let i = 0; i < probs.length; i++) {
    cumulative += probs[i]!;
    if (target < cumulative) return ids[i]!;
  }
  return ids[probs.length - 1]!;
}

/**
 * A small seeded pseudo-random generator (a Weyl sequence through a 32-bit
 * avalanche mix): the same seed gives the same `u` stream on every machine,
 * so `--seed` reproduces a sampled generation.
 *
 * @example
 * ```ts
 * import { SeededRandom } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const a = new SeededRandom(42), b = new SeededRandom(42);
 * const u = a.next();
 * assert.ok(u >= 0 && u < 1);
 * assert.equal(b.next(), u);
 * ```
 */
export class SeededRandom {
  #state: number;

  /** A generator seeded with `seed` (any integer; taken modulo 2^32). */
  constructor(seed: number) {
    if (!Number.isInteger(seed)) {
      throw new RangeError(`seed must be an integer, got ${seed}`);
    }
    this.#state = Number(BigInt.asUintN(32, BigInt(seed)));
  }

  /** The next number, uniform in [0, 1), with 32 random bits. */
  next(): number {
    this.#state = (this.#state + 0x9e3779b9) >>> 0;
    let z = this.#state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    z ^= z >>> 16;
    return (z >>> 0) / 4294967296;
  }
}
