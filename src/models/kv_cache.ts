/**
 * {@linkcode KVCache}: the keys and values of one attention layer for every
 * position seen so far, in f32 arrays sized to the context once.
 *
 * @module
 */

/**
 * Keys and values [capacity, kvHeads · headDim], row `p` holding position
 * `p`. Allocated once; a step writes its rows, never reallocates.
 *
 * @example
 * ```ts
 * import { KVCache } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const cache = new KVCache(16, 8);
 * cache.write(0, new Float32Array(8).fill(1), new Float32Array(8).fill(2), 1);
 * assert.equal(cache.keys[7], 1);
 * assert.equal(cache.values[8], 0);
 * ```
 */
export class KVCache {
  /** Positions it can hold. */
  readonly capacity: number;
  /** Floats per position (kvHeads · headDim). */
  readonly width: number;
  /** Keys, [capacity, width]. */
  readonly keys: Float32Array;
  /** Values, [capacity, width]. */
  readonly values: Float32Array;

  /** Allocates room for `capacity` positions of `width` floats. */
  constructor(capacity: number, width: number) {
    this.capacity = capacity;
    this.width = width;
    this.keys = new Float32Array(capacity * width);
    this.values = new Float32Array(capacity * width);
  }

  /**
   * Stores `rows` rows of keys and values (read with a row stride of
   * `stride` floats from `kOffset` / `vOffset`) at positions [pos, pos + rows).
   */
  write(
    pos: number,
    k: Float32Array,
    v: Float32Array,
    rows: number,
    stride: number = this.width,
    kOffset = 0,
    vOffset = 0,
  ): void {
    if (pos + rows > this.capacity) {
      throw new RangeError(
        `KV cache holds ${this.capacity} positions; cannot write [${pos}, ${
          pos + rows
        })`,
      );
    }
    const w = this.width;
    for (let r = 0; r < rows; r++) {
      this.keys.set(
        k.subarray(kOffset + r * stride, kOffset + r * stride + w),
        (pos + r) * w,
      );
      this.values.set(
        v.subarray(vOffset + r * stride, vOffset + r * stride + w),
        (pos + r) * w,
      );
    }
  }
}
