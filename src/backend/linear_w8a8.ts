/**
 * W8A8 linear: int8 weights times int8 activations quantized per token (per
 * row) at run time. The integer dot products are exact; the result is
 * `y = f32(f32(f32(acc) · s_x) · s_w)`, then `f32(y + bias)`.
 *
 * The plain reference, {@linkcode referenceLinearW8A8}, and the activation
 * quantizer it uses, {@linkcode quantizeActivationsPerToken}, are below; every
 * fast version returns their bits exactly:
 * - {@linkcode linearW8A8} (this file): JavaScript, the CPU fallback;
 * - `linear_w8a8` and `quantize_tokens` in `wasm/kernels.c`: the CPU backend;
 * - `kernels/quantize_x_i8.wgsl`, `gemv_w8a8.wgsl`, `gemm_w8a8.wgsl`,
 *   `dot_i8_*.wgsl`, `w8a8_output.wgsl`: the WebGPU backend.
 *
 * Checked by `tests/cpu_lowbit_kernels_test.ts`, `tests/lowbit_test.ts` and
 * `tests/webgpu_lowbit_test.ts`.
 *
 * @module
 */

import type { Int8Weight } from "./backend.ts";
import { checkLength, checkLowBitArgs, W8A8_MAX_K } from "./_checks.ts";
import { ROUND_MAGIC } from "../round.ts";

/**
 * Fast W8A8 linear: the same result as {@linkcode referenceLinearW8A8}, bit
 * for bit (the integer part is exact either way). Weights are read four at a
 * time as 32-bit words and sign-extended with shifts; four activation rows
 * share each word. Sums are exact int32 (|Σ| ≤ 128² · k < 2³¹ for
 * k ≤ 65536; larger k takes a plain loop of exact f64 sums). Zero points are
 * applied once per output as `Σ qx·q − zp · Σ qx`.
 *
 * @example
 * ```ts
 * import { linearW8A8, referenceLinearW8A8 } from "./linear_w8a8.ts";
 * import assert from "node:assert/strict";
 * const w = { q: new Int8Array([3, -5, 7, 1]), scales: new Float32Array([0.1, 0.2]), zeroPoints: null, n: 2, k: 2 };
 * const x = new Float32Array([0.5, -2]);
 * assert.deepEqual(linearW8A8(x, 1, w, null), referenceLinearW8A8(x, 1, w, null));
 * ```
 */
export function linearW8A8(
  x: Float32Array,
  m: number,
  w: Int8Weight,
  bias: Float32Array | null,
): Float32Array {
  const { q, scales, zeroPoints, n, k } = w;
  checkLowBitArgs("linearW8A8", x, m, w, bias);
  const a = quantizeActivationsPerToken(x, m, k);
  const xq = Int32Array.from(a.q);
  const xsum = new Float64Array(m);
  if (zeroPoints) {
    for (let i = 0; i < m; i++) {
      let s = 0;
      for (let t = i * k; t < (i + 1) * k; t++) s += xq[t]!;
      xsum[i] = s;
    }
  }
  // acc[i·n + j] = Σₜ qx[i, t] · q[j, t], exact.
  const acc = k % 4 === 0 && k <= W8A8_MAX_K
    ? dotsByWords(xq, m, q, n, k)
    : dotsPlain(xq, m, q, n, k);
  const y = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      const zp = zeroPoints ? zeroPoints[j]! : 0;
      y[i * n + j] = w8a8Epilogue(
        acc[i * n + j]! - zp * xsum[i]!,
        a.scales[i]!,
        scales[j]!,
        bias,
        j,
      );
    }
  }
  return y;
}

function dotsPlain(
  xq: Int32Array,
  m: number,
  q: Int8Array,
  n: number,
  k: number,
): Float64Array {
  const acc = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let t = 0; t < k; t++) s += xq[i * k + t]! * q[j * k + t]!;
      acc[i * n + j] = s;
    }
  }
  return acc;
}

// Needs k % 4 === 0, and k ≤ 65536 so that the `| 0` sums cannot wrap.
function dotsByWords(
  xq: Int32Array,
  m: number,
  q: Int8Array,
  n: number,
  k: number,
): Float64Array {
  const words = q.byteOffset % 4 === 0
    ? new Int32Array(q.buffer, q.byteOffset, q.length >>> 2)
    : new Int32Array(q.slice().buffer);
  const acc = new Float64Array(m * n);
  const kw = k >>> 2;
  let i = 0;
  for (; i + 4 <= m; i += 4) {
    const x0 = i * k;
    for (let j = 0; j < n; j++) {
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (let u = j * kw, t = x0, end = u + kw; u < end; u++, t += 4) {
        // Little-endian: byte b of the word is element 4u + b.
        const v = words[u]!;
        const w0 = (v << 24) >> 24, w1 = (v << 16) >> 24;
        const w2 = (v << 8) >> 24, w3 = v >> 24;
        a0 = (a0 + xq[t]! * w0 + xq[t + 1]! * w1 + xq[t + 2]! * w2 +
          xq[t + 3]! * w3) | 0;
        const t1 = t + k;
        a1 = (a1 + xq[t1]! * w0 + xq[t1 + 1]! * w1 + xq[t1 + 2]! * w2 +
          xq[t1 + 3]! * w3) | 0;
        const t2 = t1 + k;
        a2 = (a2 + xq[t2]! * w0 + xq[t2 + 1]! * w1 + xq[t2 + 2]! * w2 +
          xq[t2 + 3]! * w3) | 0;
        const t3 = t2 + k;
        a3 = (a3 + xq[t3]! * w0 + xq[t3 + 1]! * w1 + xq[t3 + 2]! * w2 +
          xq[t3 + 3]! * w3) | 0;
      }
      acc[i * n + j] = a0;
      acc[(i + 1) * n + j] = a1;
      acc[(i + 2) * n + j] = a2;
      acc[(i + 3) * n + j] = a3;
    }
  }
  for (; i < m; i++) {
    // One activation row (decode): each loaded value serves four outputs.
    const x0 = i * k;
    let j = 0;
    for (; j + 4 <= n; j += 4) {
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (let u = j * kw, t = x0, end = u + kw; u < end; u++, t += 4) {
        const e0 = xq[t]!, e1 = xq[t + 1]!, e2 = xq[t + 2]!, e3 = xq[t + 3]!;
        let v = words[u]!;
        a0 = (a0 + e0 * ((v << 24) >> 24) + e1 * ((v << 16) >> 24) +
          e2 * ((v << 8) >> 24) + e3 * (v >> 24)) | 0;
        v = words[u + kw]!;
        a1 = (a1 + e0 * ((v << 24) >> 24) + e1 * ((v << 16) >> 24) +
          e2 * ((v << 8) >> 24) + e3 * (v >> 24)) | 0;
        v = words[u + 2 * kw]!;
        a2 = (a2 + e0 * ((v << 24) >> 24) + e1 * ((v << 16) >> 24) +
          e2 * ((v << 8) >> 24) + e3 * (v >> 24)) | 0;
        v = words[u + 3 * kw]!;
        a3 = (a3 + e0 * ((v << 24) >> 24) + e1 * ((v << 16) >> 24) +
          e2 * ((v << 8) >> 24) + e3 * (v >> 24)) | 0;
      }
      acc[i * n + j] = a0;
      acc[i * n + j + 1] = a1;
      acc[i * n + j + 2] = a2;
      acc[i * n + j + 3] = a3;
    }
    for (; j < n; j++) {
      let a0 = 0;
      for (let u = j * kw, t = x0, end = u + kw; u < end; u++, t += 4) {
        const v = words[u]!;
        a0 = (a0 + xq[t]! * ((v << 24) >> 24) +
          xq[t + 1]! * ((v << 16) >> 24) + xq[t + 2]! * ((v << 8) >> 24) +
          xq[t + 3]! * (v >> 24)) | 0;
      }
      acc[i * n + j] = a0;
    }
  }
  return acc;
}

// ---- plain reference

/** Activations quantized to int8, one scale per row. */
export interface QuantizedActivations {
  /** The int8 values, row-major [m, k]. */
  readonly q: Int8Array;
  /** One f32 scale per row, [m] (NaN for a row holding NaN or ±Inf). */
  readonly scales: Float32Array;
}

/**
 * Quantizes activations per token: for each row,
 * `s = f32(absmax(row) / 127)` (1 when that is 0) and
 * `q = clamp(roundHalfToEven(f32(x / s)), −128, 127)`. A row holding NaN or
 * ±Inf gets a NaN scale and zeros, so every output of that row is NaN, as
 * it would be from a float layer, instead of silently finite.
 *
 * @example
 * ```ts
 * import { quantizeActivationsPerToken } from "./linear_w8a8.ts";
 * import assert from "node:assert/strict";
 * const { q, scales } = quantizeActivationsPerToken(new Float32Array([1.27, -0.005, 0, 0]), 2, 2);
 * assert.deepEqual([...q], [127, 0, 0, 0]);
 * assert.deepEqual([...scales], [Math.fround(Math.fround(1.27) / 127), 1]);
 * ```
 */
export function quantizeActivationsPerToken(
  x: Float32Array,
  m: number,
  k: number,
): QuantizedActivations {
  checkLength("x", x.length, m * k);
  const q = new Int8Array(m * k);
  const scales = new Float32Array(m);
  for (let i = 0; i < m; i++) {
    const start = i * k;
    let absmax = 0;
    let finite = true;
    for (let t = start; t < start + k; t++) {
      const v = x[t]!;
      const a = v < 0 ? -v : v;
      if (a > absmax) absmax = a;
      else if (!(a <= absmax)) finite = false; // NaN compares false both ways
    }
    if (!finite || absmax === Infinity) {
      scales[i] = NaN;
      continue;
    }
    let s = Math.fround(absmax / 127);
    if (s === 0) s = 1;
    scales[i] = s;
    for (let t = start; t < start + k; t++) {
      const r = (Math.fround(x[t]! / s) + ROUND_MAGIC) - ROUND_MAGIC;
      q[t] = r > 127 ? 127 : r < -128 ? -128 : r;
    }
  }
  return { q, scales };
}

/**
 * Reference W8A8 linear, written for clarity: activations quantized by
 * {@linkcode quantizeActivationsPerToken}, then for each output
 * `acc = Σₜ qx[i, t] · (q[j, t] − zp[j])` (exact integers) and
 * `y[i, j] = f32(f32(f32(acc) · s_x[i]) · s_w[j])`, plus `f32(y + bias[j])`.
 *
 * @example
 * ```ts
 * import { referenceLinearW8A8 } from "./linear_w8a8.ts";
 * import assert from "node:assert/strict";
 * const w = { q: new Int8Array([127, -127]), scales: new Float32Array([0.5]), zeroPoints: null, n: 1, k: 2 };
 * const y = referenceLinearW8A8(new Float32Array([1, 1]), 1, w, null);
 * assert.equal(y[0], 0);
 * ```
 */
export function referenceLinearW8A8(
  x: Float32Array,
  m: number,
  w: Int8Weight,
  bias: Float32Array | null,
): Float32Array {
  const { q, scales, zeroPoints, n, k } = w;
  checkLowBitArgs("referenceLinearW8A8", x, m, w, bias);
  const a = quantizeActivationsPerToken(x, m, k);
  const y = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      const zp = zeroPoints ? zeroPoints[j]! : 0;
      let acc = 0;
      for (let t = 0; t < k; t++) {
        acc += a.q[i * k + t]! * (q[j * k + t]! - zp);
      }
      y[i * n + j] = w8a8Epilogue(acc, a.scales[i]!, scales[j]!, bias, j);
    }
  }
  return y;
}

function w8a8Epilogue(
  acc: number,
  sx: number,
  sw: number,
  bias: Float32Array | null,
  j: number,
): number {
  const v = Math.fround(Math.fround(Math.fround(acc) * sx) * sw);
  return bias ? Math.fround(v + bias[j]!) : v;
}
