/**
 * The hot loop of weight quantization: symmetric per-row int8 over a whole
 * matrix, straight from f32, f16 or bf16 storage.
 *
 * @module
 */

import type { FloatDType, TypedArray } from "../dtype.ts";
import { bf16ArrayToF32 } from "../dtype.ts";
import { roundHalfToEven } from "./round.ts";

/** Int8 values and one f32 scale per row. */
export interface QuantizedRows {
  /** Quantized values, row-major [rows, cols]. */
  q: Int8Array;
  /** One scale per row. */
  scales: Float32Array;
}

/** Thrown when a weight holds NaN or ±Inf; names the tensor and the index. */
export class NonFiniteWeightError extends Error {
  /** Creates the error for element [row, col] of tensor `tensorName`. */
  constructor(tensorName: string, row: number, col: number, value: number) {
    super(
      `Tensor "${tensorName}" has ${value} at [${row}, ${col}]; cannot quantize a non-finite weight`,
    );
    this.name = "NonFiniteWeightError";
  }
}

/**
 * Symmetric per-row int8: `scale[r] = f32(absmax(row r) / 127)` and
 * `q = clamp(roundHalfToEven(f32(w / scale[r])), -128, 127)`. A row whose
 * scale would be 0 (all zeros, or subnormals too small for absmax/127) gets
 * scale 1 and zeros, so the scale is always finite and positive.
 *
 * @example
 * ```ts
 * import { quantizeRowsInt8 } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const { q, scales } = quantizeRowsInt8(new Float32Array([1, -0.5, 0, 0]), "f32", 2, 2);
 * assert.deepEqual([...q], [127, -64, 0, 0]);
 * assert.deepEqual([...scales], [Math.fround(1 / 127), 1]);
 * ```
 */
export function quantizeRowsInt8(
  data: TypedArray,
  dtype: FloatDType,
  rows: number,
  cols: number,
  tensorName = "weights",
): QuantizedRows {
  const q = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const row = rowAsF32(data, dtype, r * cols, cols);
    let absmax = 0;
    for (let c = 0; c < cols; c++) {
      const v = row[c]!;
      if (!Number.isFinite(v)) {
        throw new NonFiniteWeightError(tensorName, r, c, v);
      }
      const a = Math.abs(v);
      if (a > absmax) absmax = a;
    }
    const scale = Math.fround(absmax / 127);
    if (scale === 0) {
      scales[r] = 1;
      continue;
    }
    scales[r] = scale;
    for (let c = 0; c < cols; c++) {
      const v = roundHalfToEven(Math.fround(row[c]! / scale));
      q[r * cols + c] = v > 127 ? 127 : v < -128 ? -128 : v;
    }
  }
  return { q, scales };
}

function rowAsF32(
  data: TypedArray,
  dtype: FloatDType,
  start: number,
  cols: number,
): ArrayLike<number> {
  const view = data.subarray(start, start + cols);
  return dtype === "bf16"
    ? bf16ArrayToF32(view as Uint16Array)
    : (view as Float32Array | Float16Array);
}
