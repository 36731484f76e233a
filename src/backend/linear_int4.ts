/**
 * W4A16 linear: 4-bit weights in groups along the input dimension, float
 * activations, f32 results. Nibbles are unpacked in registers while
 * accumulating; no dequantized copy of the weight is ever made.
 *
 * The plain reference, {@linkcode referenceLinearInt4}, is below; every fast
 * version is checked against it (within f32 rounding):
 * - {@linkcode linearInt4} (this file): JavaScript, the CPU fallback;
 * - `linear_i4` (with `interleave_int4`, `prepare_int4_x`) in
 *   `wasm/kernels.c`: the CPU backend;
 * - `kernels/gemv_int4.wgsl`, `load_w_i4.wgsl` with `gemm.wgsl`: the WebGPU
 *   backend.
 *
 * Checked by `tests/cpu_lowbit_kernels_test.ts`, `tests/lowbit_test.ts` and
 * `tests/webgpu_lowbit_test.ts`.
 *
 * @module
 */

import type { Int4Weight } from "./backend.ts";
import { checkLowBitArgs } from "./_checks.ts";

export type { Int4Weight } from "./backend.ts";

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
 * import { linearInt4 } from "./linear_int4.ts";
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
  checkLowBitArgs("linearInt4", x, m, w, bias);
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

// ---- plain reference

/**
 * Reference W4A16 linear, written for clarity, with the f32 arithmetic a GPU
 * kernel does: per group `p = Σₜ f32(x[i, t] · (code[j, t] − zp))` summed in
 * f32, then `acc = f32(acc + f32(p · scale[j, g]))` over the groups, and
 * `f32(acc + bias[j])`. `zp` is 8 for symmetric weights.
 *
 * @example
 * ```ts
 * import { referenceLinearInt4 } from "./linear_int4.ts";
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
  checkLowBitArgs("referenceLinearInt4", x, m, w, bias);
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
