/**
 * The safetensors dtype names and how each maps onto a TinyQ {@linkcode DType}.
 *
 * @module
 */

import type { DType } from "../dtype.ts";

/** Upper-case file names by TinyQ dtype. */
export const FILE_DTYPE_NAME: Readonly<Record<DType, string>> = {
  f64: "F64",
  f32: "F32",
  f16: "F16",
  bf16: "BF16",
  i64: "I64",
  i32: "I32",
  i16: "I16",
  i8: "I8",
  u64: "U64",
  u32: "U32",
  u16: "U16",
  u8: "U8",
  bool: "BOOL",
  f8_e4m3: "F8_E4M3",
  f8_e5m2: "F8_E5M2",
  f8_e4m3fnuz: "F8_E4M3FNUZ",
  f8_e5m2fnuz: "F8_E5M2FNUZ",
  f8_e8m0: "F8_E8M0",
};

/** TinyQ dtype by file name (own keys only, so `"toString"` is no dtype). */
export const DTYPE_BY_FILE_NAME: ReadonlyMap<string, DType> = new Map(
  Object.entries(FILE_DTYPE_NAME).map(([d, n]) => [n, d as DType]),
);

/**
 * Dtypes the safetensors format defines that TinyQ has no {@linkcode DType}
 * for: sub-byte floats and complex. A file holding one is refused with `InvalidDtype` rather than read
 * into a type that would misname its bits.
 */
export const UNSUPPORTED_FILE_DTYPES: ReadonlySet<string> = new Set([
  "F4",
  "F6_E2M3",
  "F6_E3M2",
  "C64",
]);
