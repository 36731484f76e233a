/**
 * A quantized Linear's stored tensors handed to an output format: the one
 * place that picks `encodeLinear` or `encodeInt4Linear` by the scheme's bit
 * width. The streaming writer passes the rows it just quantized with the
 * scheme's layout; `saveModule` passes a layer's `storedRows()`; both are
 * the output of the same row quantizer.
 *
 * @module
 */

import type { DType } from "../dtype.ts";
import type { StoredRows } from "../quant/layouts.ts";
import type { CheckpointFormat, WeightScheme } from "./formats/format.ts";

/** Where a block of rows sits in its layer. */
export interface RowsAt {
  /** Dotted module path. */
  readonly path: string;
  /** Output features (all rows of the layer). */
  readonly outFeatures: number;
  /** Input features (columns). */
  readonly inFeatures: number;
  /** First row of this block. */
  readonly rowStart: number;
  /** Rows in this block. */
  readonly rows: number;
  /** Dtype of the float weight it came from. */
  readonly sourceDtype: DType;
}

/**
 * The bytes of each tensor of `format.linearTensors(…, scheme)` for a block
 * of stored rows (absent scheme: int8 per-channel symmetric).
 */
export function encodeStoredRows(
  format: CheckpointFormat,
  at: RowsAt,
  scheme: WeightScheme | undefined,
  rows: StoredRows,
): Uint8Array[] {
  if (scheme?.bits === 4) {
    return format.encodeInt4Linear!({
      ...at,
      packed: rows.weights as Uint8Array,
      scales: rows.scales,
      zeroPoints: rows.zeroPoints as Uint8Array | null,
      groupSize: scheme.groupSize!,
    });
  }
  return format.encodeLinear({
    ...at,
    q: rows.weights as Int8Array,
    scales: rows.scales,
    ...(rows.zeroPoints ? { zeroPoints: rows.zeroPoints as Int8Array } : {}),
    ...(scheme ? { scheme } : {}),
  });
}
