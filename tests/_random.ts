// Deterministic test data, so that a failure names a reproducible case.

import type { Activations, Int8Weight } from "../src/backend/backend.ts";
import { f32ArrayToBf16, type FloatDType } from "../src/dtype.ts";

/** A deterministic pseudo-random stream in [0, 1) (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` values of `r` spread over [-scale, scale). */
export function randomF32(n: number, r: () => number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);
}

/** `n` values in [-scale, scale) from the stream of `seed`. */
export function floats(n: number, seed: number, scale = 1): Float32Array {
  return randomF32(n, rng(seed), scale);
}

/** f32 values as activations of `dtype` (rounded to nearest even). */
export function activations(x: Float32Array, dtype: FloatDType): Activations {
  return dtype === "f32"
    ? x
    : dtype === "f16"
    ? Float16Array.from(x)
    : f32ArrayToBf16(x);
}

/** A random int8 [n, k] weight from `r`: every code, and zero points if `zp`. */
export function randomInt8Weight(
  n: number,
  k: number,
  r: () => number,
  zp: boolean,
): Int8Weight {
  const codes = () => Math.floor(r() * 256) - 128;
  return {
    q: Int8Array.from({ length: n * k }, codes),
    scales: Float32Array.from({ length: n }, () => 0.001 + r() * 0.05),
    zeroPoints: zp ? Int8Array.from({ length: n }, codes) : null,
    n,
    k,
  };
}
