/**
 * Asymmetric per-row int8 over a whole matrix, straight from f32, f16 or
 * bf16 storage: what `Int8LinearLayer.quantize(w, { asymmetric: true })` and
 * `tinyq quantize --asymmetric` store. The values are exactly those of
 * {@linkcode linearQAsymmetricPerChannel} (axis 0), which is the plain
 * reference it is tested against; this loop only avoids its per-element
 * closures, so a checkpoint quantizes at hundreds of MB/s.
 *
 * @module
 */

import type { FloatDType, TypedArray } from "../dtype.ts";
import { scaleAndZeroPoint } from "./math.ts";
import { NonFiniteWeightError } from "./quantize_rows.ts";
import { ROUND_MAGIC } from "../round.ts";

/** Int8 values, one f32 scale and one int8 zero point per row. */
export interface AsymmetricRows {
  /** Quantized values, row-major [rows, cols]. */
  q: Int8Array;
  /** One scale per row. */
  scales: Float32Array;
  /** One zero point per row, in [−128, 127]. */
  zeroPoints: Int8Array;
}

/**
 * Asymmetric per-row int8: for each row, [min, max] widened to include 0,
 * `scale = f32(f32(max − min) / 255)` (1 when that is 0),
 * `zp = clamp(roundHalfToEven(−128 − f32(min / scale)), −128, 127)` and
 * `q = clamp(roundHalfToEven(f32(w / scale)) + zp, −128, 127)`. NaN or ±Inf
 * throws a {@linkcode NonFiniteWeightError} naming the tensor and index.
 *
 * @example
 * ```ts
 * import { quantizeRowsInt8Asymmetric } from "./quantize_rows_asymmetric.ts";
 * import assert from "node:assert/strict";
 * const r = quantizeRowsInt8Asymmetric(new Float32Array([0, 2.55, -1, 1]), "f32", 2, 2);
 * assert.deepEqual([...r.q], [-128, 127, -128, 126]);
 * assert.deepEqual([...r.zeroPoints], [-128, -1]);
 * ```
 */
export function quantizeRowsInt8Asymmetric(
  data: TypedArray,
  dtype: FloatDType,
  rows: number,
  cols: number,
  tensorName = "weights",
): AsymmetricRows {
  if (data.length < rows * cols) {
    throw new RangeError(
      `Tensor "${tensorName}" has ${data.length} elements, expected ${rows} × ${cols}`,
    );
  }
  const q = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  const zeroPoints = new Int8Array(rows);
  // The row in f32, reused; its bit patterns give max and −min without
  // unpredictable branches (see int4.ts), and reveal NaN/±Inf.
  const buf = new Float32Array(cols);
  const bits = new Int32Array(buf.buffer);
  const one = new Float32Array(1);
  const oneBits = new Int32Array(one.buffer);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    if (dtype === "bf16") {
      const src = data as Uint16Array;
      for (let c = 0; c < cols; c++) bits[c] = src[base + c]! << 16;
    } else {
      buf.set(
        (data as Float32Array | Float16Array).subarray(base, base + cols),
      );
    }
    let pos = 0, neg = 0;
    for (let c = 0; c < cols; c++) {
      const b = bits[c]!;
      const sign = b >> 31;
      const m = b & 0x7fffffff;
      pos = Math.max(pos, m & ~sign);
      neg = Math.max(neg, m & sign);
    }
    if (Math.max(pos, neg) >= 0x7f800000) {
      for (let c = 0; c < cols; c++) {
        const v = buf[c]!;
        if (!Number.isFinite(v)) {
          throw new NonFiniteWeightError(tensorName, r, c, v);
        }
      }
    }
    oneBits[0] = pos;
    const max = one[0]!;
    oneBits[0] = neg;
    const min = -one[0]!;
    const { scale, zeroPoint } = scaleAndZeroPoint(min, max, "i8");
    scales[r] = scale;
    zeroPoints[r] = zeroPoint;
    const zp = zeroPoint | 0;
    for (let c = 0; c < cols; c++) {
      // |w / scale| ≤ 255 here, so ROUND_MAGIC rounds half to even; the sum stays
      // int32 (mixing int and double here halves the speed).
      let v =
        (((Math.fround(buf[c]! / scale) + ROUND_MAGIC) - ROUND_MAGIC) | 0) + zp;
      v = v > 127 ? 127 : v < -128 ? -128 : v;
      q[base + c] = v;
    }
  }
  return { q, scales, zeroPoints };
}
