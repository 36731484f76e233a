/**
 * The {@linkcode Tensor}: a dtype, a shape and a typed array, row-major.
 *
 * @module
 */

import {
  type DType,
  DTYPE_ARRAY,
  DTYPE_SIZE,
  f32ToFloatArray,
  floatArrayToF32,
  type FloatDType,
  type TypedArray,
} from "./dtype.ts";

const ARRAY_DTYPE = new Map<unknown, DType>([
  [Float64Array, "f64"],
  [Float32Array, "f32"],
  [Float16Array, "f16"],
  [BigInt64Array, "i64"],
  [Int32Array, "i32"],
  [Int16Array, "i16"],
  [Int8Array, "i8"],
  [BigUint64Array, "u64"],
  [Uint32Array, "u32"],
  [Uint16Array, "u16"],
  [Uint8Array, "u8"],
]);

/**
 * Returns the number of elements of a shape (1 for a scalar shape `[]`).
 *
 * @example
 * ```ts
 * import { numel } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.equal(numel([2, 3]), 6);
 * ```
 */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * A dense row-major tensor.
 *
 * @example Make an f32 matrix and read it as f16
 * ```ts
 * import { Tensor } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const t = new Tensor(new Float32Array([1, 2, 3, 4]), [2, 2]);
 * assert.equal(t.dtype, "f32");
 * assert.equal(t.to("f16").dtype, "f16");
 * ```
 */
export class Tensor {
  /** The elements, row-major (bf16 as raw `Uint16Array` bits). */
  readonly data: TypedArray;
  /** The dimensions, outermost first. */
  readonly shape: readonly number[];
  /** The element type. */
  readonly dtype: DType;

  /**
   * Wraps a typed array (not copied). `dtype` is inferred from the array's
   * type when omitted; it is required for bf16 and the other types that share
   * an array type (bool, f8).
   */
  constructor(data: TypedArray, shape: readonly number[], dtype?: DType) {
    const inferred = ARRAY_DTYPE.get(data.constructor);
    const dt = dtype ?? inferred;
    if (dt === undefined) {
      throw new TypeError("Cannot infer a dtype from this array type");
    }
    if (!(data instanceof DTYPE_ARRAY[dt])) {
      throw new TypeError(
        `Dtype "${dt}" needs a ${
          DTYPE_ARRAY[dt].name
        }, got ${data.constructor.name}`,
      );
    }
    for (const d of shape) {
      if (!Number.isSafeInteger(d) || d < 0) {
        throw new RangeError(`Invalid shape [${shape.join(", ")}]`);
      }
    }
    if (numel(shape) !== data.length) {
      throw new RangeError(
        `Shape [${shape.join(", ")}] needs ${
          numel(shape)
        } elements, got ${data.length}`,
      );
    }
    this.data = data;
    this.shape = Object.freeze([...shape]);
    this.dtype = dt;
  }

  /** Creates a zero-filled tensor. */
  static zeros(shape: readonly number[], dtype: DType = "f32"): Tensor {
    return new Tensor(new DTYPE_ARRAY[dtype](numel(shape)), shape, dtype);
  }

  /** Number of elements. */
  get size(): number {
    return this.data.length;
  }

  /** Number of dimensions. */
  get ndim(): number {
    return this.shape.length;
  }

  /** Size in bytes of the elements. */
  get byteLength(): number {
    return this.data.length * DTYPE_SIZE[this.dtype];
  }

  /** The elements as f32 (the tensor's own array when it is already f32). */
  toF32Array(): Float32Array {
    return floatArrayToF32(this.data, this.dtype);
  }

  /**
   * Converts a float tensor to another float dtype (round to nearest even).
   * Returns `this` when the dtype already matches.
   */
  to(dtype: FloatDType | "f64"): Tensor {
    if (dtype === this.dtype) return this;
    return new Tensor(
      f32ToFloatArray(this.toF32Array(), dtype),
      this.shape,
      dtype,
    );
  }

  /** The same data viewed with another shape of equal size. */
  reshape(shape: readonly number[]): Tensor {
    return new Tensor(this.data, shape, this.dtype);
  }

  /** The raw little-endian bytes of the elements (a view, not a copy). */
  bytes(): Uint8Array {
    return new Uint8Array(
      this.data.buffer,
      this.data.byteOffset,
      this.byteLength,
    );
  }

  /** Builds a tensor over a copy of little-endian bytes. */
  static fromBytes(
    bytes: Uint8Array,
    shape: readonly number[],
    dtype: DType,
  ): Tensor {
    const Ctor = DTYPE_ARRAY[dtype];
    const size = DTYPE_SIZE[dtype];
    const copy = new Uint8Array(bytes.byteLength);
    copy.set(bytes);
    const data = new (Ctor as unknown as new (
      b: ArrayBuffer,
      o: number,
      n: number,
    ) => TypedArray)(
      copy.buffer,
      0,
      bytes.byteLength / size,
    );
    return new Tensor(data, shape, dtype);
  }
}

/**
 * A tensor whose elements are read only when asked for (for example one tensor
 * of a safetensors file on disk).
 */
export interface LazyTensor {
  /** The element type. */
  readonly dtype: DType;
  /** The dimensions. */
  readonly shape: readonly number[];
  /** Reads the elements. */
  load(): Promise<Tensor>;
}

/** A tensor in memory or one still on disk. */
export type TensorSource = Tensor | LazyTensor;

/**
 * Returns the tensor itself, or loads a lazy one.
 *
 * @example
 * ```ts
 * import { materialize, Tensor } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const t = new Tensor(new Float32Array([1]), [1]);
 * assert.equal(await materialize(t), t);
 * ```
 */
export function materialize(t: TensorSource): Promise<Tensor> {
  return t instanceof Tensor ? Promise.resolve(t) : t.load();
}
