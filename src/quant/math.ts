/**
 * The quantization math, with TinyQ's function names in camelCase. All
 * arithmetic is f32 with round-half-to-even, as `torch.round` and ONNX
 * `QuantizeLinear` do; quantization saturates to the target range.
 *
 * @module
 */

import { type FloatDType, isFloatDType } from "../dtype.ts";
import { Tensor } from "../tensor.ts";
import { NonFiniteWeightError, quantizeRowsInt8 } from "./quantize_rows.ts";
import { roundHalfToEven } from "../round.ts";

/** The integer types a quantized tensor can have. */
export type QuantDType = "i8" | "u8";

const RANGE: Readonly<Record<QuantDType, readonly [number, number]>> = {
  i8: [-128, 127],
  u8: [0, 255],
};

/** A scale or zero point: one number for the whole tensor, or a 1-D tensor along `axis`. */
export type QuantParam = number | Tensor;

/** Options of {@linkcode linearQWithScaleAndZeroPoint} and {@linkcode linearDequantization}. */
export interface AxisOptions {
  /** The axis a 1-D scale/zero point runs along (default 1, as in ONNX; negative counts from the end). */
  axis?: number;
}

/** Options of {@linkcode linearQWithScaleAndZeroPoint}. */
export interface QuantizeLinearOptions extends AxisOptions {
  /** The output type (default: the zero point's type when it is a tensor, else i8). */
  dtype?: QuantDType;
}

/** Options of the per-channel quantizers. */
export interface PerChannelOptions {
  /** The channel axis (default 0: output rows of a Linear weight). */
  axis?: number;
  /** The tensor's name, for error messages. */
  name?: string;
}

/** A quantized tensor with its scale (and zero point when asymmetric). */
export interface QuantizedTensor {
  /** The integer values. */
  quantized: Tensor;
  /** The scale: a number (per tensor) or f32 tensor (per channel). */
  scale: QuantParam;
  /** The zero point: 0 (symmetric), a number or an integer tensor. */
  zeroPoint: QuantParam;
}

function floatValues(r: Tensor, what: string): Float32Array {
  if (!isFloatDType(r.dtype)) {
    throw new TypeError(`${what} takes a float tensor, got ${r.dtype}`);
  }
  return r.toF32Array();
}

function checkFinite(
  v: Float32Array,
  shape: readonly number[],
  name: string,
): void {
  for (let i = 0; i < v.length; i++) {
    if (!Number.isFinite(v[i])) {
      const cols = shape.length > 1 ? shape[shape.length - 1]! : v.length;
      throw new NonFiniteWeightError(
        name,
        Math.floor(i / cols),
        i % cols,
        v[i]!,
      );
    }
  }
}

function normAxis(axis: number, ndim: number): number {
  const a = axis < 0 ? axis + ndim : axis;
  if (!Number.isInteger(a) || a < 0 || a >= ndim) {
    throw new RangeError(`Axis ${axis} is out of range for a ${ndim}-D tensor`);
  }
  return a;
}

/** Maps a flat index to its index along `axis`. */
function channelIndexer(
  shape: readonly number[],
  axis: number,
): (i: number) => number {
  let inner = 1;
  for (let d = axis + 1; d < shape.length; d++) inner *= shape[d]!;
  const size = shape[axis]!;
  return (i) => Math.floor(i / inner) % size;
}

function paramValues(
  p: QuantParam,
  shape: readonly number[],
  axis: number,
  what: string,
): (i: number) => number {
  if (typeof p === "number") return () => p;
  if (p.size === 1 && p.ndim <= 1) {
    const v = Number(p.data[0]);
    return () => v;
  }
  const a = normAxis(axis, shape.length);
  if (p.ndim !== 1 || p.size !== shape[a]) {
    throw new RangeError(
      `${what} of shape [${
        p.shape.join(", ")
      }] does not match axis ${axis} of shape [${shape.join(", ")}]`,
    );
  }
  const values = isFloatDType(p.dtype)
    ? p.toF32Array()
    : Float64Array.from(p.data as ArrayLike<number>);
  const idx = channelIndexer(shape, a);
  return (i) => values[idx(i)]!;
}

/**
 * Quantizes with a given scale and zero point, as ONNX `QuantizeLinear`:
 * `q = saturate(roundHalfToEven(f32(x / scale)) + zeroPoint)`. A 1-D scale or
 * zero point is per-axis.
 *
 * @example
 * ```ts
 * import { linearQWithScaleAndZeroPoint, Tensor } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const q = linearQWithScaleAndZeroPoint(new Tensor(new Float32Array([0.25, 0.75, 1000]), [3]), 0.5, 0);
 * assert.deepEqual([...q.data], [0, 2, 127]);
 * ```
 */
export function linearQWithScaleAndZeroPoint(
  x: Tensor,
  scale: QuantParam,
  zeroPoint: QuantParam,
  options: QuantizeLinearOptions = {},
): Tensor {
  const values = floatValues(x, "linearQWithScaleAndZeroPoint()");
  const dtype = options.dtype ??
    (zeroPoint instanceof Tensor && zeroPoint.dtype === "u8" ? "u8" : "i8");
  const [lo, hi] = RANGE[dtype];
  const axis = options.axis ?? 1;
  const s = paramValues(scale, x.shape, axis, "Scale");
  const z = paramValues(zeroPoint, x.shape, axis, "Zero point");
  const out = dtype === "u8"
    ? new Uint8Array(values.length)
    : new Int8Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = roundHalfToEven(Math.fround(values[i]! / s(i))) + z(i);
    // NaN saturates to the zero point's side like ONNX implementations do: 0 offset.
    out[i] = v > hi ? hi : v < lo ? lo : Number.isNaN(v) ? z(i) : v;
  }
  return new Tensor(out, x.shape, dtype);
}

/**
 * Dequantizes, as ONNX `DequantizeLinear`: `f32((q − zeroPoint) · scale)`.
 *
 * @example
 * ```ts
 * import { linearDequantization, Tensor } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const r = linearDequantization(new Tensor(new Int8Array([-2, 4]), [2]), 0.5, 0);
 * assert.deepEqual([...r.data], [-1, 2]);
 * ```
 */
export function linearDequantization(
  q: Tensor,
  scale: QuantParam,
  zeroPoint: QuantParam,
  options: AxisOptions = {},
): Tensor {
  if (isFloatDType(q.dtype) || q.dtype === "bool") {
    throw new TypeError(
      `linearDequantization() takes an integer tensor, got ${q.dtype}`,
    );
  }
  const axis = options.axis ?? 1;
  const s = paramValues(scale, q.shape, axis, "Scale");
  const z = paramValues(zeroPoint, q.shape, axis, "Zero point");
  const data = q.data as ArrayLike<number>;
  const out = new Float32Array(q.size);
  for (let i = 0; i < out.length; i++) out[i] = (Number(data[i]) - z(i)) * s(i);
  return new Tensor(out, q.shape);
}

/**
 * The symmetric int8 scale of a whole tensor: `f32(absmax / 127)`. A scale
 * that would be 0 (all zeros) is 1, so dividing by it is always safe.
 *
 * @example
 * ```ts
 * import { getQScaleSymmetric, Tensor } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.equal(getQScaleSymmetric(new Tensor(new Float32Array([-2.54, 1]), [2])), Math.fround(Math.fround(2.54) / 127));
 * ```
 */
export function getQScaleSymmetric(r: Tensor, name = "tensor"): number {
  const v = floatValues(r, "getQScaleSymmetric()");
  checkFinite(v, r.shape, name);
  let absmax = 0;
  for (const x of v) absmax = Math.max(absmax, Math.abs(x));
  const scale = Math.fround(absmax / 127);
  return scale === 0 ? 1 : scale;
}

/**
 * The asymmetric scale and zero point of a tensor for a target type, as
 * TinyQ's `get_q_scale_and_zero_point`: `scale = f32((max − min) / (qmax − qmin))`,
 * `zeroPoint = clamp(roundHalfToEven(qmin − min / scale), qmin, qmax)`, with
 * [min, max] widened to include 0 so that every value is representable.
 *
 * @example
 * ```ts
 * import { getQScaleAndZeroPoint, Tensor } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const { scale, zeroPoint } = getQScaleAndZeroPoint(new Tensor(new Float32Array([0, 2.55]), [2]));
 * assert.equal(scale, Math.fround(Math.fround(2.55) / 255));
 * assert.equal(zeroPoint, -128);
 * ```
 */
export function getQScaleAndZeroPoint(
  r: Tensor,
  dtype: QuantDType = "i8",
  name = "tensor",
): { scale: number; zeroPoint: number } {
  const v = floatValues(r, "getQScaleAndZeroPoint()");
  checkFinite(v, r.shape, name);
  let min = Infinity, max = -Infinity;
  for (const x of v) {
    if (x < min) min = x;
    if (x > max) max = x;
  }
  if (v.length === 0) min = max = 0;
  return scaleAndZeroPoint(min, max, dtype);
}

/**
 * Scale and zero point of a [min, max] range. The range is first widened to
 * include 0, as PyTorch's observers do, so the zero point is always in range:
 * TinyQ's raw range saturates rows that are all positive or all negative.
 *
 * @internal
 */
export function scaleAndZeroPoint(
  min: number,
  max: number,
  dtype: QuantDType,
): { scale: number; zeroPoint: number } {
  const [qmin, qmax] = RANGE[dtype];
  const lo = Math.min(min, 0), hi = Math.max(max, 0);
  // An all-zero range, or a subnormal one that underflows: any scale is exact.
  const scale = Math.fround(Math.fround(hi - lo) / (qmax - qmin)) || 1;
  const zp = roundHalfToEven(qmin - Math.fround(lo / scale));
  return { scale, zeroPoint: Math.min(qmax, Math.max(qmin, zp)) };
}

/**
 * Symmetric per-tensor int8 quantization.
 *
 * @example
 * ```ts
 * import { linearQSymmetric, Tensor } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const { quantized } = linearQSymmetric(new Tensor(new Float32Array([1, -0.5]), [2]));
 * assert.deepEqual([...quantized.data], [127, -64]);
 * ```
 */
export function linearQSymmetric(r: Tensor, name = "tensor"): QuantizedTensor {
  const scale = getQScaleSymmetric(r, name);
  return {
    quantized: linearQWithScaleAndZeroPoint(r, scale, 0),
    scale,
    zeroPoint: 0,
  };
}

/**
 * Asymmetric per-tensor quantization (scale and zero point) to i8 or u8.
 *
 * @example
 * ```ts
 * import { linearQAsymmetric, Tensor } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const { quantized } = linearQAsymmetric(new Tensor(new Float32Array([0, 2.55]), [2]), "u8");
 * assert.deepEqual([...quantized.data], [0, 255]);
 * ```
 */
export function linearQAsymmetric(
  r: Tensor,
  dtype: QuantDType = "i8",
  name = "tensor",
): QuantizedTensor {
  const { scale, zeroPoint } = getQScaleAndZeroPoint(r, dtype, name);
  return {
    quantized: linearQWithScaleAndZeroPoint(r, scale, zeroPoint, { dtype }),
    scale,
    zeroPoint,
  };
}

function channelRanges(
  v: Float32Array,
  shape: readonly number[],
  axis: number,
): { min: Float32Array; max: Float32Array } {
  const size = shape[axis]!;
  const idx = channelIndexer(shape, axis);
  const min = new Float32Array(size).fill(Infinity);
  const max = new Float32Array(size).fill(-Infinity);
  for (let i = 0; i < v.length; i++) {
    const c = idx(i);
    if (v[i]! < min[c]!) min[c] = v[i]!;
    if (v[i]! > max[c]!) max[c] = v[i]!;
  }
  return { min, max };
}

/**
 * Symmetric per-channel int8 quantization along `axis` (TinyQ's
 * `linear_q_symmetric_per_channel`): one scale `f32(absmax / 127)` per
 * channel. The result's `scale` is an f32 tensor of length `shape[axis]`.
 *
 * @example
 * ```ts
 * import { linearQSymmetricPerChannel, Tensor } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const w = new Tensor(new Float32Array([1, -0.5, 0, 0.25]), [2, 2]);
 * const { quantized, scale } = linearQSymmetricPerChannel(w);
 * assert.deepEqual([...quantized.data], [127, -64, 0, 127]);
 * assert.equal((scale as Tensor).size, 2);
 * ```
 */
export function linearQSymmetricPerChannel(
  r: Tensor,
  options: PerChannelOptions = {},
): QuantizedTensor {
  const name = options.name ?? "tensor";
  if (!isFloatDType(r.dtype)) {
    throw new TypeError(
      `Tensor "${name}" must be f32, f16 or bf16 to quantize, got ${r.dtype}`,
    );
  }
  const axis = normAxis(options.axis ?? 0, r.ndim);
  if (axis === 0) {
    const rows = r.shape[0]!;
    const cols = rows === 0 ? 0 : r.size / rows;
    const { q, scales } = quantizeRowsInt8(
      r.data,
      r.dtype as FloatDType,
      rows,
      cols,
      name,
    );
    return {
      quantized: new Tensor(q, r.shape),
      scale: new Tensor(scales, [rows]),
      zeroPoint: 0,
    };
  }
  const v = r.toF32Array();
  checkFinite(v, r.shape, name);
  const { min, max } = channelRanges(v, r.shape, axis);
  const scales = new Float32Array(min.length);
  for (let c = 0; c < scales.length; c++) {
    const s = Math.fround(Math.max(Math.abs(min[c]!), Math.abs(max[c]!)) / 127);
    scales[c] = s === 0 ? 1 : s;
  }
  const scale = new Tensor(scales, [scales.length]);
  return {
    quantized: linearQWithScaleAndZeroPoint(r, scale, 0, { axis }),
    scale,
    zeroPoint: 0,
  };
}

/**
 * Asymmetric per-channel quantization along `axis`: a scale and zero point
 * per channel, as {@linkcode getQScaleAndZeroPoint} computes them.
 *
 * @example
 * ```ts
 * import { linearQAsymmetricPerChannel, Tensor } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const w = new Tensor(new Float32Array([0, 2.55, -1, 1]), [2, 2]);
 * const { quantized } = linearQAsymmetricPerChannel(w);
 * assert.deepEqual([...quantized.data], [-128, 127, -128, 126]);
 * ```
 */
export function linearQAsymmetricPerChannel(
  r: Tensor,
  options: PerChannelOptions & { dtype?: QuantDType } = {},
): QuantizedTensor {
  const name = options.name ?? "tensor";
  const dtype = options.dtype ?? "i8";
  const v = floatValues(r, "linearQAsymmetricPerChannel()");
  checkFinite(v, r.shape, name);
  const axis = normAxis(options.axis ?? 0, r.ndim);
  const { min, max } = channelRanges(v, r.shape, axis);
  const scales = new Float32Array(min.length);
  const zps = dtype === "u8"
    ? new Uint8Array(min.length)
    : new Int8Array(min.length);
  for (let c = 0; c < scales.length; c++) {
    const p = scaleAndZeroPoint(min[c]!, max[c]!, dtype);
    scales[c] = p.scale;
    zps[c] = p.zeroPoint;
  }
  const scale = new Tensor(scales, [scales.length]);
  const zeroPoint = new Tensor(zps, [zps.length], dtype);
  return {
    quantized: linearQWithScaleAndZeroPoint(r, scale, zeroPoint, {
      axis,
      dtype,
    }),
    scale,
    zeroPoint,
  };
}
