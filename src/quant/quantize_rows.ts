/**
 * The hot loop of weight quantization: symmetric per-row int8 over a whole
 * matrix, straight from f32, f16 or bf16 storage. {@linkcode quantizeRowsInt8}
 * runs the WebAssembly SIMD kernel (wasm/kernels.c, several GB/s);
 * {@linkcode quantizeRowsInt8Reference} is the plain loop it is checked
 * against, bit for bit, and the fallback (`TINYQ_CPU_KERNEL=reference` forces
 * it).
 *
 * @module
 */

import type { FloatDType, TypedArray } from "../dtype.ts";
import { bf16ArrayToF32 } from "../dtype.ts";
import {
  alignUp,
  Arena,
  defaultKernel,
  kernelsModule,
} from "../backend/wasm_kernels.ts";
import { roundHalfToEven } from "../round.ts";

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
 * scale 1 and zeros, so the scale is always finite and positive. NaN or ±Inf
 * throws a {@linkcode NonFiniteWeightError} naming the first such element
 * (row-major order).
 *
 * Runs the WebAssembly SIMD kernel, in chunks of rows through a small
 * staging buffer (memory does not grow with the matrix); the results are
 * bit-identical to {@linkcode quantizeRowsInt8Reference}, which runs instead
 * where WebAssembly is missing or `TINYQ_CPU_KERNEL=reference`.
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
  return quantizeRowsWasm(data, dtype, rows, cols, tensorName) ??
    quantizeRowsInt8Reference(data, dtype, rows, cols, tensorName);
}

/**
 * The plain loop behind {@linkcode quantizeRowsInt8}, written for clarity:
 * the reference the fast kernel is tested against, and its fallback.
 *
 * @example
 * ```ts
 * import { quantizeRowsInt8Reference } from "./quantize_rows.ts";
 * import assert from "node:assert/strict";
 * const { q } = quantizeRowsInt8Reference(new Float32Array([2, 1]), "f32", 1, 2);
 * assert.deepEqual([...q], [127, 64]);
 * ```
 */
export function quantizeRowsInt8Reference(
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

/** Input bytes per wasm call: big enough to amortise the call, small enough to stay in L2/L3. */
const CHUNK_BYTES = 1 << 20;

const ARRAY_OF: Record<FloatDType, unknown> = {
  f32: Float32Array,
  f16: Float16Array,
  bf16: Uint16Array,
};
const KIND: Record<FloatDType, number> = { f32: 0, f16: 1, bf16: 2 };

let staging: Arena | null | undefined;
let useWasm: boolean | undefined;

function stagingArena(): Arena | null {
  if (useWasm === undefined) useWasm = defaultKernel() !== "reference";
  if (!useWasm) return null;
  if (staging === undefined) {
    const module = kernelsModule(
      defaultKernel() === "simd128" ? "simd128" : undefined,
    );
    try {
      staging = module ? new Arena(-1, module) : null;
    } catch {
      staging = null;
    }
  }
  return staging;
}

/** The kernel path, or null to use the reference (unusual input, no wasm). */
function quantizeRowsWasm(
  data: TypedArray,
  dtype: FloatDType,
  rows: number,
  cols: number,
  tensorName: string,
): QuantizedRows | null {
  // Anything unusual (a mismatched array type, too few values, odd sizes)
  // takes the reference path, so it behaves exactly as the reference does.
  if (
    data.constructor !== ARRAY_OF[dtype] || !Number.isSafeInteger(rows) ||
    !Number.isSafeInteger(cols) || rows <= 0 || cols <= 0 ||
    data.length < rows * cols
  ) {
    return null;
  }
  const arena = stagingArena();
  if (!arena) return null;
  const size = dtype === "f32" ? 4 : 2;
  const rowBytes = cols * size;
  const chunkRows = Math.min(
    rows,
    Math.max(1, Math.floor(CHUNK_BYTES / rowBytes)),
  );
  const inBytes = alignUp(chunkRows * rowBytes);
  const qBytes = alignUp(chunkRows * cols);
  const total = inBytes + qBytes + 4 * chunkRows;
  const base = arena.alloc(total);
  if (base < 0) return null;
  try {
    const q = new Int8Array(rows * cols);
    const scales = new Float32Array(rows);
    const src = new Uint8Array(data.buffer, data.byteOffset, rows * rowBytes);
    for (let r0 = 0; r0 < rows; r0 += chunkRows) {
      const nr = Math.min(chunkRows, rows - r0);
      const buf = arena.buffer;
      new Uint8Array(buf, base, nr * rowBytes).set(
        src.subarray(r0 * rowBytes, (r0 + nr) * rowBytes),
      );
      const bad = arena.exports.quantize_rows(
        base,
        KIND[dtype],
        nr,
        cols,
        base + inBytes,
        base + inBytes + qBytes,
      );
      if (bad >= 0) {
        throwFirstNonFinite(data, dtype, r0 + bad, cols, tensorName);
      }
      q.set(new Int8Array(buf, base + inBytes, nr * cols), r0 * cols);
      scales.set(new Float32Array(buf, base + inBytes + qBytes, nr), r0);
    }
    return { q, scales };
  } finally {
    arena.free(base, total);
  }
}

function throwFirstNonFinite(
  data: TypedArray,
  dtype: FloatDType,
  r: number,
  cols: number,
  tensorName: string,
): never {
  const row = rowAsF32(data, dtype, r * cols, cols);
  for (let c = 0; c < cols; c++) {
    const v = row[c]!;
    if (!Number.isFinite(v)) {
      throw new NonFiniteWeightError(tensorName, r, c, v);
    }
  }
  throw new Error(
    `quantize_rows flagged row ${r} of "${tensorName}" but it is finite`,
  );
}
