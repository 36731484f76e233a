/**
 * The two stored weight layouts of the quantized layers, each with the one
 * row quantizer that fills it: int8 with one scale (and zero point) per
 * output row, and 4-bit codes in groups along a row. `layer.quantize()` and
 * the streaming checkpoint writer both call {@linkcode WeightLayout.quantizeRows},
 * so a layer quantized in memory and one streamed to disk block by block
 * hold the same bytes.
 *
 * @module
 */

import type { FloatDType, TypedArray } from "../dtype.ts";
import { quantizeRowsInt8 } from "./quantize_rows.ts";
import { quantizeRowsInt8Asymmetric } from "./quantize_rows_asymmetric.ts";
import { quantizeInt4 } from "./int4.ts";

/** The stored tensors of a block of rows of a quantized weight. */
export interface StoredRows {
  /** Int8 values [rows, cols] (8-bit), or codes two per byte [rows, cols / 2] (4-bit). */
  readonly weights: Int8Array | Uint8Array;
  /** One f32 scale per row (8-bit) or per group (4-bit). */
  readonly scales: Float32Array;
  /** Zero points, as `scales` (i8 for 8-bit, u8 0–15 for 4-bit), or null when symmetric. */
  readonly zeroPoints: Int8Array | Uint8Array | null;
}

/** How to quantize: zero points or not, the group size of 4-bit weights, the tensor's name for errors. */
export interface RowQuantizeOptions {
  /** Store zero points. */
  readonly asymmetric: boolean;
  /** Inputs per group (4-bit layouts); ignored by per-row layouts. */
  readonly groupSize: number | null;
  /** The weight's name in error messages. */
  readonly name: string;
}

/** A stored weight layout: its bit width, tensor names and its row quantizer. */
export interface WeightLayout {
  /** Bits per weight value. */
  readonly bits: 4 | 8;
  /** The name of the weight tensor in a layer and in the native format. */
  readonly weightsName: "int8_weights" | "int4_weights";
  /** Quantizes a float matrix [rows, cols] into this layout. */
  quantizeRows(
    data: TypedArray,
    dtype: FloatDType,
    rows: number,
    cols: number,
    options: RowQuantizeOptions,
  ): StoredRows;
}

/**
 * Int8 per output row: symmetric (`quantizeRowsInt8`, WebAssembly) or with
 * one zero point per row (`quantizeRowsInt8Asymmetric`).
 *
 * @example
 * ```ts
 * import { INT8_PER_ROW } from "./layouts.ts";
 * import assert from "node:assert/strict";
 * const r = INT8_PER_ROW.quantizeRows(new Float32Array([1, -0.5]), "f32", 1, 2, {
 *   asymmetric: false, groupSize: null, name: "w",
 * });
 * assert.deepEqual([...r.weights], [127, -64]);
 * assert.equal(r.zeroPoints, null);
 * ```
 */
export const INT8_PER_ROW: WeightLayout = Object.freeze<WeightLayout>(
  {
    bits: 8,
    weightsName: "int8_weights",
    quantizeRows: (data, dtype, rows, cols, options) => {
      if (options.asymmetric) {
        const r = quantizeRowsInt8Asymmetric(
          data,
          dtype,
          rows,
          cols,
          options.name,
        );
        return { weights: r.q, scales: r.scales, zeroPoints: r.zeroPoints };
      }
      const r = quantizeRowsInt8(data, dtype, rows, cols, options.name);
      return { weights: r.q, scales: r.scales, zeroPoints: null };
    },
  },
);

/**
 * 4-bit codes in groups of `groupSize` inputs, two per byte (`quantizeInt4`).
 *
 * @example
 * ```ts
 * import { INT4_GROUPS } from "./layouts.ts";
 * import assert from "node:assert/strict";
 * const r = INT4_GROUPS.quantizeRows(new Float32Array(32).fill(0.7), "f32", 1, 32, {
 *   asymmetric: false, groupSize: 32, name: "w",
 * });
 * assert.equal(r.weights.length, 16);
 * assert.equal(r.scales.length, 1);
 * ```
 */
export const INT4_GROUPS: WeightLayout = Object.freeze<WeightLayout>(
  {
    bits: 4,
    weightsName: "int4_weights",
    quantizeRows: (data, dtype, rows, cols, options) => {
      const w = quantizeInt4(data, dtype, rows, cols, {
        asymmetric: options.asymmetric,
        name: options.name,
        ...(options.groupSize !== null ? { groupSize: options.groupSize } : {}),
      });
      return { weights: w.packed, scales: w.scales, zeroPoints: w.zeroPoints };
    },
  },
);
