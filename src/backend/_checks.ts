/**
 * Argument checks shared by the CPU kernels and the WebGPU backend: each
 * throws one error naming the operation and what was wrong.
 *
 * @module
 */

import type { FloatDType } from "../dtype.ts";
import type { Activations, Int4Weight, Int8Weight } from "./backend.ts";

/** W8A8 sums in int32: exact while |Σ qx·q| < 2³¹, so for k ≤ 2¹⁶. */
export const W8A8_MAX_K = 65536;

/** Throws unless m, k (and n) are sizes, `x` holds m × k values and `bias` n. */
export function checkShapes(
  op: string,
  xLength: number,
  m: number,
  k: number,
  n = 0,
  bias: Float32Array | null = null,
): void {
  for (const [name, v] of [["m", m], ["n", n], ["k", k]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new RangeError(
        `${op}: ${name} must be a non-negative integer, got ${v}`,
      );
    }
  }
  if (xLength !== m * k) {
    throw new RangeError(
      `${op}: input has ${xLength} values, expected ${m} × ${k} = ${m * k}`,
    );
  }
  if (bias && bias.length !== n) {
    throw new RangeError(
      `${op}: bias has ${bias.length} values, expected ${n}`,
    );
  }
}

/** Throws unless the weight has n·k values, n scales and n zero points if any. */
export function checkInt8Weight(w: Int8Weight, op: string): void {
  if (
    w.q.length !== w.n * w.k || w.scales.length !== w.n ||
    (w.zeroPoints !== null && w.zeroPoints.length !== w.n)
  ) {
    throw new RangeError(
      `${op}: weight [${w.n}, ${w.k}] has ${w.q.length} values, ${w.scales.length} scales` +
        (w.zeroPoints ? `, ${w.zeroPoints.length} zero points` : ""),
    );
  }
}

/**
 * Throws unless the groups (32, 64 or 128 inputs) divide k and the weight
 * has n·k/2 bytes, a scale per group and a zero point per group if any.
 */
export function checkInt4Weight(w: Int4Weight, op: string): void {
  const { n, k, groupSize } = w;
  if (
    !(groupSize === 32 || groupSize === 64 || groupSize === 128) ||
    k % groupSize !== 0
  ) {
    throw new RangeError(
      `${op}: k = ${k} must be a multiple of the group size (32, 64 or 128), got group size ${groupSize}`,
    );
  }
  const groups = n * (k / groupSize);
  if (
    w.packed.length !== n * k / 2 || w.scales.length !== groups ||
    (w.zeroPoints !== null && w.zeroPoints.length !== groups)
  ) {
    throw new RangeError(
      `${op}: weight [${n}, ${k}] in groups of ${groupSize} needs ${
        n * k / 2
      } bytes and ${groups} scales${
        w.zeroPoints ? " and zero points" : ""
      }, got ${w.packed.length} bytes, ${w.scales.length} scales` +
        (w.zeroPoints ? `, ${w.zeroPoints.length} zero points` : ""),
    );
  }
}

const ARRAY_OF: Record<
  FloatDType,
  Float32ArrayConstructor | Float16ArrayConstructor | Uint16ArrayConstructor
> = { f32: Float32Array, f16: Float16Array, bf16: Uint16Array };

/** Throws unless `x` is the typed array `dtype` activations come in. */
export function checkActivations(
  x: Activations,
  dtype: FloatDType,
  op: string,
): void {
  const want = ARRAY_OF[dtype];
  if (!want || !(x instanceof want)) {
    throw new TypeError(
      `${op}: ${dtype} activations must be a ${
        want?.name ?? "float array"
      }, got ${x.constructor.name}`,
    );
  }
}

/**
 * Throws unless the weight is whole, x holds m·k values and bias n (the
 * low-bit kernels' checks, messages as `checkLength`).
 */
export function checkLowBitArgs(
  op: string,
  x: Float32Array,
  m: number,
  w: Int8Weight | Int4Weight,
  bias: Float32Array | null,
): void {
  if ("packed" in w) checkInt4Weight(w, op);
  else checkInt8Weight(w, op);
  checkLength("x", x.length, m * w.k);
  if (bias) checkLength("bias", bias.length, w.n);
}

/** Throws a RangeError unless `got` (the length of `what`) is `want`. */
export function checkLength(what: string, got: number, want: number): void {
  if (got !== want) {
    throw new RangeError(`${what} must have ${want} elements, got ${got}`);
  }
}
