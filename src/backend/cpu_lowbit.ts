/**
 * CPU kernels of the low-bit schemes, each fast kernel beside the plain
 * reference it is tested against:
 *
 * - W8A8: int8 weights times int8 activations quantized per token (per row)
 *   at run time. The integer dot products are exact; the result is
 *   `y = f32(f32(f32(acc) · s_x) · s_w)`, then `f32(y + bias)`.
 * - W4A16: 4-bit weights in groups along the input dimension, float
 *   activations, f32 results. Nibbles are unpacked in registers while
 *   accumulating; no dequantized copy of the weight is ever made.
 *
 * @module
 */

import type { Int4Weight, Int8Weight } from "./backend.ts";

export type { Int4Weight } from "./backend.ts";
import { checkInt4Weight, checkInt8Weight, W8A8_MAX_K } from "./_checks.ts";
import { ROUND_MAGIC } from "../round.ts";

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
 * import { quantizeActivationsPerToken } from "./cpu_lowbit.ts";
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
 * import { referenceLinearW8A8 } from "./cpu_lowbit.ts";
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
  checkArgs("referenceLinearW8A8", x, m, w, bias);
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
 * import { linearW8A8, referenceLinearW8A8 } from "./cpu_lowbit.ts";
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
  checkArgs("linearW8A8", x, m, w, bias);
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

/**
 * Reference W4A16 linear, written for clarity, with the f32 arithmetic a GPU
 * kernel does: per group `p = Σₜ f32(x[i, t] · (code[j, t] − zp))` summed in
 * f32, then `acc = f32(acc + f32(p · scale[j, g]))` over the groups, and
 * `f32(acc + bias[j])`. `zp` is 8 for symmetric weights.
 *
 * @example
 * ```ts
 * import { referenceLinearInt4 } from "./cpu_lowbit.ts";
 * import assert from "node:assert/strict";
 * // 32 inputs, one group; codes 9 (= +1 when symmetric) everywhere, scale 0.5.
 * const w = { packed: new Uint8Array(16).fill(0x99), scales: new Float32Array([0.5]), zeroPoints: null, n: 1, k: 32, groupSize: 32 };
 * assert.equal(referenceLinearInt4(new Float32Array(32).fill(1), 1, w, null)[0], 16);
 * ```
 */
export function referenceLinearInt4(
  x: Float32Array,
  m: number,
  w: Int4Weight,
  bias: Float32Array | null,
): Float32Array {
  checkArgs("referenceLinearInt4", x, m, w, bias);
  const { packed, scales, zeroPoints, n, k, groupSize } = w;
  const groups = k / groupSize;
  const y = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let g = 0; g < groups; g++) {
        const zp = zeroPoints ? zeroPoints[j * groups + g]! : 8;
        let p = 0;
        for (let t = g * groupSize; t < (g + 1) * groupSize; t++) {
          const e = j * k + t;
          const code = (packed[e >> 1]! >> ((e & 1) * 4)) & 15;
          p = Math.fround(p + Math.fround(x[i * k + t]! * (code - zp)));
        }
        acc = Math.fround(acc + Math.fround(p * scales[j * groups + g]!));
      }
      y[i * n + j] = bias ? Math.fround(acc + bias[j]!) : acc;
    }
  }
  return y;
}

/**
 * Fast W4A16 linear (f64 accumulation, so within f32 rounding of
 * {@linkcode referenceLinearInt4}, usually closer to the exact value). The
 * packed weight is read 8 nibbles at a time as 32-bit words, unpacked with
 * shifts in registers and multiplied by the raw unsigned codes; the offset
 * (8, or the zero point) is subtracted once per group as `off · Σx`. Each
 * unpacked word serves four activation rows, and with fewer rows left each
 * loaded activation serves four output rows.
 *
 * @example
 * ```ts
 * import { linearInt4 } from "./cpu_lowbit.ts";
 * import assert from "node:assert/strict";
 * const w = { packed: new Uint8Array(16).fill(0x99), scales: new Float32Array([0.5]), zeroPoints: null, n: 1, k: 32, groupSize: 32 };
 * assert.equal(linearInt4(new Float32Array(32).fill(1), 1, w, null)[0], 16);
 * ```
 */
export function linearInt4(
  x: Float32Array,
  m: number,
  w: Int4Weight,
  bias: Float32Array | null,
): Float32Array {
  checkArgs("linearInt4", x, m, w, bias);
  const { packed, k, groupSize } = w;
  const groups = k / groupSize;
  // Little-endian words: nibble c of word u is element 8u + c (byte order =
  // nibble-pair order). Copied once here if the bytes are not 4-aligned.
  const words = packed.byteOffset % 4 === 0
    ? new Uint32Array(packed.buffer, packed.byteOffset, packed.length >>> 2)
    : new Uint32Array(packed.slice().buffer);
  // Σx per row and group, for the offset term.
  const xsum = new Float64Array(m * groups);
  for (let i = 0; i < m; i++) {
    for (let g = 0; g < groups; g++) {
      let s = 0;
      const o = i * k + g * groupSize;
      for (let t = o; t < o + groupSize; t++) s += x[t]!;
      xsum[i * groups + g] = s;
    }
  }
  const acc = new Float64Array(m * w.n);
  let i = 0;
  for (; i + 4 <= m; i += 4) int4FourRows(x, i, words, xsum, w, acc);
  for (; i < m; i++) int4OneRow(x, i, words, xsum, w, acc);
  const y = new Float32Array(m * w.n);
  for (let e = 0; e < y.length; e++) {
    y[e] = bias ? acc[e]! + bias[e % w.n]! : acc[e]!;
  }
  return y;
}

// Rows i..i+3 of x against every output row: one unpacked word, four dots.
function int4FourRows(
  x: Float32Array,
  i: number,
  words: Uint32Array,
  xsum: Float64Array,
  w: Int4Weight,
  y: Float64Array,
): void {
  const { scales, zeroPoints, n, k, groupSize } = w;
  const groups = k / groupSize, wpg = groupSize >>> 3;
  for (let j = 0; j < n; j++) {
    let y0 = 0, y1 = 0, y2 = 0, y3 = 0;
    let u = j * (k >>> 3);
    for (let g = 0; g < groups; g++) {
      let p0 = 0, p1 = 0, p2 = 0, p3 = 0;
      let xo = i * k + g * groupSize;
      for (const end = u + wpg; u < end; u++, xo += 8) {
        const v = words[u]!;
        const c0 = v & 15, c1 = (v >>> 4) & 15, c2 = (v >>> 8) & 15;
        const c3 = (v >>> 12) & 15, c4 = (v >>> 16) & 15;
        const c5 = (v >>> 20) & 15, c6 = (v >>> 24) & 15, c7 = v >>> 28;
        let o = xo;
        p0 += x[o]! * c0 + x[o + 1]! * c1 + x[o + 2]! * c2 + x[o + 3]! * c3 +
          x[o + 4]! * c4 + x[o + 5]! * c5 + x[o + 6]! * c6 + x[o + 7]! * c7;
        o += k;
        p1 += x[o]! * c0 + x[o + 1]! * c1 + x[o + 2]! * c2 + x[o + 3]! * c3 +
          x[o + 4]! * c4 + x[o + 5]! * c5 + x[o + 6]! * c6 + x[o + 7]! * c7;
        o += k;
        p2 += x[o]! * c0 + x[o + 1]! * c1 + x[o + 2]! * c2 + x[o + 3]! * c3 +
          x[o + 4]! * c4 + x[o + 5]! * c5 + x[o + 6]! * c6 + x[o + 7]! * c7;
        o += k;
        p3 += x[o]! * c0 + x[o + 1]! * c1 + x[o + 2]! * c2 + x[o + 3]! * c3 +
          x[o + 4]! * c4 + x[o + 5]! * c5 + x[o + 6]! * c6 + x[o + 7]! * c7;
      }
      const sg = j * groups + g;
      const s = scales[sg]!;
      const off = zeroPoints ? zeroPoints[sg]! : 8;
      y0 += s * (p0 - off * xsum[i * groups + g]!);
      y1 += s * (p1 - off * xsum[(i + 1) * groups + g]!);
      y2 += s * (p2 - off * xsum[(i + 2) * groups + g]!);
      y3 += s * (p3 - off * xsum[(i + 3) * groups + g]!);
    }
    y[i * n + j] = y0;
    y[(i + 1) * n + j] = y1;
    y[(i + 2) * n + j] = y2;
    y[(i + 3) * n + j] = y3;
  }
}

// Row i of x (decode): eight activations loaded once serve four output rows.
function int4OneRow(
  x: Float32Array,
  i: number,
  words: Uint32Array,
  xsum: Float64Array,
  w: Int4Weight,
  y: Float64Array,
): void {
  const { scales, zeroPoints, n, k, groupSize } = w;
  const groups = k / groupSize, wpg = groupSize >>> 3, rw = k >>> 3;
  const xr = i * k, sr = i * groups;
  let j = 0;
  for (; j + 4 <= n; j += 4) {
    let y0 = 0, y1 = 0, y2 = 0, y3 = 0;
    let u = j * rw, xo = xr;
    for (let g = 0; g < groups; g++) {
      let p0 = 0, p1 = 0, p2 = 0, p3 = 0;
      for (const end = u + wpg; u < end; u++, xo += 8) {
        const x0 = x[xo]!, x1 = x[xo + 1]!, x2 = x[xo + 2]!, x3 = x[xo + 3]!;
        const x4 = x[xo + 4]!, x5 = x[xo + 5]!, x6 = x[xo + 6]!;
        const x7 = x[xo + 7]!;
        let v = words[u]!;
        p0 += x0 * (v & 15) + x1 * ((v >>> 4) & 15) + x2 * ((v >>> 8) & 15) +
          x3 * ((v >>> 12) & 15) + x4 * ((v >>> 16) & 15) +
          x5 * ((v >>> 20) & 15) + x6 * ((v >>> 24) & 15) + x7 * (v >>> 28);
        v = words[u + rw]!;
        p1 += x0 * (v & 15) + x1 * ((v >>> 4) & 15) + x2 * ((v >>> 8) & 15) +
          x3 * ((v >>> 12) & 15) + x4 * ((v >>> 16) & 15) +
          x5 * ((v >>> 20) & 15) + x6 * ((v >>> 24) & 15) + x7 * (v >>> 28);
        v = words[u + 2 * rw]!;
        p2 += x0 * (v & 15) + x1 * ((v >>> 4) & 15) + x2 * ((v >>> 8) & 15) +
          x3 * ((v >>> 12) & 15) + x4 * ((v >>> 16) & 15) +
          x5 * ((v >>> 20) & 15) + x6 * ((v >>> 24) & 15) + x7 * (v >>> 28);
        v = words[u + 3 * rw]!;
        p3 += x0 * (v & 15) + x1 * ((v >>> 4) & 15) + x2 * ((v >>> 8) & 15) +
          x3 * ((v >>> 12) & 15) + x4 * ((v >>> 16) & 15) +
          x5 * ((v >>> 20) & 15) + x6 * ((v >>> 24) & 15) + x7 * (v >>> 28);
      }
      const sg = j * groups + g, o = xsum[sr + g]!;
      y0 += scales[sg]! * (p0 - (zeroPoints ? zeroPoints[sg]! : 8) * o);
      y1 += scales[sg + groups]! *
        (p1 - (zeroPoints ? zeroPoints[sg + groups]! : 8) * o);
      y2 += scales[sg + 2 * groups]! *
        (p2 - (zeroPoints ? zeroPoints[sg + 2 * groups]! : 8) * o);
      y3 += scales[sg + 3 * groups]! *
        (p3 - (zeroPoints ? zeroPoints[sg + 3 * groups]! : 8) * o);
    }
    y[i * n + j] = y0;
    y[i * n + j + 1] = y1;
    y[i * n + j + 2] = y2;
    y[i * n + j + 3] = y3;
  }
  for (; j < n; j++) {
    let acc = 0;
    let u = j * rw, xo = xr;
    for (let g = 0; g < groups; g++) {
      let p = 0;
      for (const end = u + wpg; u < end; u++, xo += 8) {
        const v = words[u]!;
        p += x[xo]! * (v & 15) + x[xo + 1]! * ((v >>> 4) & 15) +
          x[xo + 2]! * ((v >>> 8) & 15) + x[xo + 3]! * ((v >>> 12) & 15) +
          x[xo + 4]! * ((v >>> 16) & 15) + x[xo + 5]! * ((v >>> 20) & 15) +
          x[xo + 6]! * ((v >>> 24) & 15) + x[xo + 7]! * (v >>> 28);
      }
      const sg = j * groups + g;
      const off = zeroPoints ? zeroPoints[sg]! : 8;
      acc += scales[sg]! * (p - off * xsum[sr + g]!);
    }
    y[i * n + j] = acc;
  }
}

/** Throws unless the weight is whole, x holds m·k values and bias n. */
function checkArgs(
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

function checkLength(what: string, got: number, want: number): void {
  if (got !== want) {
    throw new RangeError(`${what} must have ${want} elements, got ${got}`);
  }
}
