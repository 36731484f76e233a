/**
 * Element types and the exact float conversions between them.
 *
 * bf16 has no native JavaScript array, so it is stored as raw `Uint16Array`
 * bits; every other float type uses its native typed array. All narrowing
 * conversions round to nearest, ties to even, and keep NaN, ±Inf and
 * subnormals.
 *
 * @module
 */

/** The element types a {@linkcode Tensor} can hold (safetensors' set, lower-case). */
export type DType =
  | "f64"
  | "f32"
  | "f16"
  | "bf16"
  | "i64"
  | "i32"
  | "i16"
  | "i8"
  | "u64"
  | "u32"
  | "u16"
  | "u8"
  | "bool"
  | "f8_e4m3"
  | "f8_e5m2"
  | "f8_e4m3fnuz"
  | "f8_e5m2fnuz"
  | "f8_e8m0";

/** The float activation types a quantized layer accepts. */
export type FloatDType = "f32" | "f16" | "bf16";

/** Any typed array a {@linkcode Tensor} can wrap. */
export type TypedArray =
  | Float64Array
  | Float32Array
  | Float16Array
  | BigInt64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | BigUint64Array
  | Uint32Array
  | Uint16Array
  | Uint8Array;

/** Bytes per element of each dtype. */
export const DTYPE_SIZE: Readonly<Record<DType, number>> = {
  f64: 8,
  f32: 4,
  f16: 2,
  bf16: 2,
  i64: 8,
  i32: 4,
  i16: 2,
  i8: 1,
  u64: 8,
  u32: 4,
  u16: 2,
  u8: 1,
  bool: 1,
  f8_e4m3: 1,
  f8_e5m2: 1,
  f8_e4m3fnuz: 1,
  f8_e5m2fnuz: 1,
  f8_e8m0: 1,
};

/** A typed-array class: `new C(length)` or a view `new C(buffer, byteOffset, length)`. */
export interface TypedArrayConstructor {
  /** Allocates `length` zeroed elements. */
  new (length: number): TypedArray;
  /** Views `length` elements of `buffer` from `byteOffset`. */
  new (buffer: ArrayBuffer, byteOffset: number, length: number): TypedArray;
  /** The class name, for messages. */
  readonly name: string;
}

/** The typed array each dtype is stored in (bf16 as raw bits, bool and f8 as bytes). */
export const DTYPE_ARRAY: Readonly<Record<DType, TypedArrayConstructor>> = {
  f64: Float64Array,
  f32: Float32Array,
  f16: Float16Array,
  bf16: Uint16Array,
  i64: BigInt64Array,
  i32: Int32Array,
  i16: Int16Array,
  i8: Int8Array,
  u64: BigUint64Array,
  u32: Uint32Array,
  u16: Uint16Array,
  u8: Uint8Array,
  bool: Uint8Array,
  f8_e4m3: Uint8Array,
  f8_e5m2: Uint8Array,
  f8_e4m3fnuz: Uint8Array,
  f8_e5m2fnuz: Uint8Array,
  f8_e8m0: Uint8Array,
};

/** Returns true when `dtype` is one of the float activation types. */
export function isFloatDType(dtype: string): dtype is FloatDType {
  return dtype === "f32" || dtype === "f16" || dtype === "bf16";
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/**
 * Converts one f32 value to bf16 bits, rounding to nearest even.
 *
 * @example Round 1 + 2⁻⁸ (a tie) down to 1
 * ```ts
 * import { f32ToBf16Bits } from "./dtype.ts";
 * import assert from "node:assert/strict";
 * assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80);
 * ```
 */
export function f32ToBf16Bits(value: number): number {
  f32Scratch[0] = value;
  const bits = u32Scratch[0]!;
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x007fffff) !== 0) {
    // NaN: keep sign and top payload bits, force quiet so it cannot become Inf.
    return ((bits >>> 16) | 0x0040) & 0xffff;
  }
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Converts bf16 bits to the f32 value they encode (exact).
 *
 * @example
 * ```ts
 * import { bf16BitsToF32 } from "./dtype.ts";
 * import assert from "node:assert/strict";
 * assert.equal(bf16BitsToF32(0x3fc0), 1.5);
 * ```
 */
export function bf16BitsToF32(bits: number): number {
  u32Scratch[0] = (bits & 0xffff) << 16;
  return f32Scratch[0]!;
}

/**
 * Converts a whole array of f32 values to bf16 bits (round to nearest even).
 *
 * @example
 * ```ts
 * import { f32ArrayToBf16 } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...f32ArrayToBf16(new Float32Array([1, -2]))], [0x3f80, 0xc000]);
 * ```
 */
export function f32ArrayToBf16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i]!;
    out[i] = (b & 0x7fffffff) > 0x7f800000
      ? (b >>> 16) | 0x0040
      : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}

/**
 * Widens bf16 bits to f32 (exact).
 *
 * @example
 * ```ts
 * import { bf16ArrayToF32 } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...bf16ArrayToF32(new Uint16Array([0x3f80]))], [1]);
 * ```
 */
export function bf16ArrayToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = src[i]! << 16;
  return out;
}

/**
 * Returns the f32 values of a float array of the given dtype. An f32 input is
 * returned as is (not copied).
 *
 * @example
 * ```ts
 * import { floatArrayToF32 } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...floatArrayToF32(new Float16Array([0.5]), "f16")], [0.5]);
 * ```
 */
export function floatArrayToF32(data: TypedArray, dtype: DType): Float32Array {
  switch (dtype) {
    case "f32":
      return data as Float32Array;
    case "bf16":
      return bf16ArrayToF32(data as Uint16Array);
    case "f16":
    case "f64":
      // Float16 → f32 is exact; f64 → f32 rounds to nearest even.
      return Float32Array.from(data as Float16Array | Float64Array);
    default:
      throw new TypeError(`Cannot read dtype "${dtype}" as float`);
  }
}

/**
 * Rounds f32 values to a float dtype's array (nearest even). f32 in, f32 out
 * returns the input itself.
 *
 * @example
 * ```ts
 * import { f32ToFloatArray } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const h = f32ToFloatArray(new Float32Array([1 / 3]), "f16") as Float16Array;
 * assert.equal(h[0], Math.f16round(1 / 3));
 * ```
 */
export function f32ToFloatArray(
  data: Float32Array,
  dtype: FloatDType | "f64",
): Float32Array | Float16Array | Uint16Array | Float64Array {
  switch (dtype) {
    case "f32":
      return data;
    case "bf16":
      return f32ArrayToBf16(data);
    case "f16":
      // f32 → f64 is exact, so this is a single correctly rounded narrowing.
      return Float16Array.from(data);
    case "f64":
      return Float64Array.from(data);
  }
}
