/**
 * Group-wise 4-bit weight quantization: one scale (and, when asymmetric, one
 * zero point) per `groupSize` consecutive inputs of each output row, the
 * codes packed two per byte. All arithmetic is f32 with round-half-to-even,
 * as in the int8 math.
 *
 * - Symmetric: `scale = f32(absmax(group) / 7)`,
 *   `q = clamp(roundHalfToEven(f32(w / scale)), −8, 7)`, stored as `q + 8`.
 * - Asymmetric: `scale = f32(f32(max − min) / 15)`,
 *   `zp = clamp(roundHalfToEven(f32(−min / scale)), 0, 15)`,
 *   `q = clamp(roundHalfToEven(f32(w / scale)) + zp, 0, 15)`, stored as is.
 *   As for asymmetric int8, [min, max] is first widened to include 0 (what
 *   PyTorch's observers and GPTQ do): with the raw range an all-positive
 *   group would get zp = 0 and saturate its largest values.
 * - A group whose scale would be 0 (all zeros) gets scale 1 and q = 0.
 *
 * @module
 */

import type { Int4Weight } from "../backend/backend.ts";
import { bf16ArrayToF32, type FloatDType, type TypedArray } from "../dtype.ts";
import { NonFiniteWeightError } from "./quantize_rows.ts";
import { ROUND_MAGIC, roundHalfToEven } from "../round.ts";

/** The group sizes 4-bit weights support. */
export type Int4GroupSize = 32 | 64 | 128;

/** The supported group sizes, smallest first. */
export const INT4_GROUP_SIZES: readonly Int4GroupSize[] = Object.freeze([
  32,
  64,
  128,
]);

/** The group size used when none is given (as compressed-tensors' W4A16 preset). */
export const DEFAULT_INT4_GROUP_SIZE: Int4GroupSize = 128;

/** Options of {@linkcode quantizeInt4}. */
export interface QuantizeInt4Options {
  /** Inputs per group: 32, 64 or 128 (default 128). */
  groupSize?: number;
  /** Zero point per group (codes 0–15) instead of symmetric codes. Default false. */
  asymmetric?: boolean;
  /** The weight's name, for error messages (e.g. the checkpoint tensor name). */
  name?: string;
}

/**
 * Checks that `groupSize` is supported and divides `inFeatures`, throwing a
 * RangeError that names the tensor and both sizes otherwise.
 *
 * @example
 * ```ts
 * import { checkInt4GroupSize } from "./int4.ts";
 * import assert from "node:assert/strict";
 * assert.equal(checkInt4GroupSize(4096, 128, "fc.weight"), 128);
 * assert.throws(() => checkInt4GroupSize(100, 128, "fc.weight"), /"fc.weight" has 100 input features/);
 * ```
 */
export function checkInt4GroupSize(
  inFeatures: number,
  groupSize: number,
  name = "weights",
): Int4GroupSize {
  if (!(INT4_GROUP_SIZES as readonly number[]).includes(groupSize)) {
    throw new RangeError(
      `Group size ${groupSize} for "${name}" is not supported: use ${
        INT4_GROUP_SIZES.join(", ")
      }`,
    );
  }
  if (inFeatures % groupSize !== 0) {
    const fits = INT4_GROUP_SIZES.filter((g) => inFeatures % g === 0);
    throw new RangeError(
      `Tensor "${name}" has ${inFeatures} input features, not a multiple of the group size ${groupSize}; ${
        fits.length
          ? `use a group size of ${fits.join(" or ")}`
          : "no supported group size divides it"
      }, or exclude the layer`,
    );
  }
  return groupSize as Int4GroupSize;
}

/** The options of a 4-bit quantization, checked against the matrix. */
function checkedInt4Options(
  data: TypedArray,
  rows: number,
  cols: number,
  options: QuantizeInt4Options,
): { name: string; groupSize: number; asymmetric: boolean; groups: number } {
  const name = options.name ?? "weights";
  const groupSize = checkInt4GroupSize(
    cols,
    options.groupSize ?? DEFAULT_INT4_GROUP_SIZE,
    name,
  );
  if (data.length !== rows * cols) {
    throw new RangeError(
      `Tensor "${name}" has ${data.length} elements, expected ${rows} × ${cols}`,
    );
  }
  const asymmetric = options.asymmetric ?? false;
  return { name, groupSize, asymmetric, groups: cols / groupSize };
}

/**
 * Quantizes a float matrix [rows, cols] (f32, f16 or bf16 storage) to packed
 * group-wise 4-bit codes. NaN or ±Inf is a {@linkcode NonFiniteWeightError}
 * naming the tensor and index.
 *
 * @example Symmetric, one group of 32
 * ```ts
 * import { quantizeInt4, unpackInt4 } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const w = new Float32Array(32);
 * w[0] = 0.7; w[1] = -0.35;
 * const q = quantizeInt4(w, "f32", 1, 32, { groupSize: 32 });
 * assert.equal(q.scales[0], Math.fround(Math.fround(0.7) / 7));
 * assert.deepEqual([...unpackInt4(q.packed).subarray(0, 3)], [15, 4, 8]); // 7, −4 (−3.5 → −4), 0, plus 8
 * assert.equal(q.zeroPoints, null);
 * ```
 */
export function quantizeInt4(
  data: TypedArray,
  dtype: FloatDType,
  rows: number,
  cols: number,
  options: QuantizeInt4Options = {},
): Int4Weight {
  const { name, groupSize, asymmetric, groups } = checkedInt4Options(
    data,
    rows,
    cols,
    options,
  );
  const packed = new Uint8Array(rows * cols / 2);
  const scales = new Float32Array(rows * groups);
  const zeroPoints = asymmetric ? new Uint8Array(rows * groups) : null;
  // One f32 row at a time, reused (bf16 widened through its bit pattern).
  // The range comes from the bit patterns: for finite IEEE floats, a larger
  // magnitude has a larger `bits & 0x7fffffff`, and NaN/±Inf sit above
  // 0x7f800000, so integer maxima (no unpredictable branches) give absmax,
  // max and −min, and reveal a non-finite value.
  const buf = new Float32Array(cols);
  const bufBits = new Int32Array(buf.buffer);
  const one = new Float32Array(1);
  const oneBits = new Int32Array(one.buffer);
  const fromBits = (b: number): number => {
    oneBits[0] = b;
    return one[0]!;
  };
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    if (dtype === "bf16") {
      const src = data as Uint16Array;
      for (let c = 0; c < cols; c++) bufBits[c] = src[base + c]! << 16;
    } else {
      buf.set(
        (data as Float32Array | Float16Array).subarray(base, base + cols),
      );
    }
    for (let g = 0; g < groups; g++) {
      const c0 = g * groupSize;
      const c1 = c0 + groupSize;
      // 0 included: the widened range (see @module).
      let pos = 0, neg = 0;
      for (let c = c0; c < c1; c++) {
        const b = bufBits[c]!;
        const sign = b >> 31;
        const m = b & 0x7fffffff;
        pos = Math.max(pos, m & ~sign);
        neg = Math.max(neg, m & sign);
      }
      if (Math.max(pos, neg) >= 0x7f800000) {
        for (let c = c0; c < c1; c++) {
          const v = buf[c]!;
          if (!Number.isFinite(v)) {
            throw new NonFiniteWeightError(name, r, c, v);
          }
        }
      }
      const max = fromBits(pos), min = -fromBits(neg);
      let scale: number, offset: number;
      if (asymmetric) {
        scale = Math.fround(Math.fround(max - min) / 15);
        if (scale === Infinity) {
          throw new RangeError(
            `Tensor "${name}" row ${r} group ${g}: range [${min}, ${max}] overflows f32; cannot quantize`,
          );
        }
        if (scale === 0) scale = 1;
        let zp = roundHalfToEven(Math.fround(-min / scale));
        zp = zp > 15 ? 15 : zp < 0 ? 0 : zp;
        zeroPoints![r * groups + g] = zp;
        offset = zp | 0;
      } else {
        scale = Math.fround(Math.max(max, -min) / 7) || 1;
        offset = 8; // clamp(q, −8, 7) + 8 = clamp(q + 8, 0, 15)
      }
      scales[r * groups + g] = scale;
      // Pairs never straddle a group: groupSize and c0 are even. The
      // quotients are small, so ROUND_MAGIC rounds them half to even, and the
      // codes stay int32 (mixing int and double here halves the speed).
      let j = (base + c0) >> 1;
      for (let c = c0; c < c1; c += 2, j++) {
        let a =
          (((Math.fround(buf[c]! / scale) + ROUND_MAGIC) - ROUND_MAGIC) | 0) +
          offset;
        a = a > 15 ? 15 : a < 0 ? 0 : a;
        let b =
          (((Math.fround(buf[c + 1]! / scale) + ROUND_MAGIC) - ROUND_MAGIC) |
            0) +
          offset;
        b = b > 15 ? 15 : b < 0 ? 0 : b;
        packed[j] = a | (b << 4);
      }
    }
  }
  return { packed, scales, zeroPoints, n: rows, k: cols, groupSize };
}

/**
 * The plain loop behind {@linkcode quantizeInt4}, written from the formulas
 * in the module comment (float comparisons, {@linkcode roundHalfToEven},
 * {@linkcode packInt4}): the reference the fast version is tested against,
 * bit for bit.
 *
 * @example
 * ```ts
 * import { quantizeInt4 } from "@tinyq/tinyq";
 * import { quantizeInt4Reference } from "./int4.ts";
 * import assert from "node:assert/strict";
 * const w = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
 * const fast = quantizeInt4(w, "f32", 1, 64, { groupSize: 32, asymmetric: true });
 * const ref = quantizeInt4Reference(w, "f32", 1, 64, { groupSize: 32, asymmetric: true });
 * assert.deepEqual(fast, ref);
 * ```
 */
export function quantizeInt4Reference(
  data: TypedArray,
  dtype: FloatDType,
  rows: number,
  cols: number,
  options: QuantizeInt4Options = {},
): Int4Weight {
  const { name, groupSize, asymmetric, groups } = checkedInt4Options(
    data,
    rows,
    cols,
    options,
  );
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows * groups);
  const zeroPoints = asymmetric ? new Uint8Array(rows * groups) : null;
  const clamp = (v: number, lo: number, hi: number) =>
    v < lo ? lo : v > hi ? hi : v;
  for (let r = 0; r < rows; r++) {
    const row = dtype === "bf16"
      ? bf16ArrayToF32((data as Uint16Array).subarray(r * cols, (r + 1) * cols))
      : Float32Array.from(
        (data as Float32Array | Float16Array).subarray(
          r * cols,
          (r + 1) * cols,
        ),
      );
    for (let g = 0; g < groups; g++) {
      const group = row.subarray(g * groupSize, (g + 1) * groupSize);
      let min = 0, max = 0; // 0 included: the widened range
      for (let c = 0; c < groupSize; c++) {
        const v = group[c]!;
        if (!Number.isFinite(v)) {
          throw new NonFiniteWeightError(name, r, g * groupSize + c, v);
        }
        if (v < min) min = v;
        if (v > max) max = v;
      }
      let scale: number, offset: number;
      if (asymmetric) {
        scale = Math.fround(Math.fround(max - min) / 15);
        if (scale === Infinity) {
          throw new RangeError(
            `Tensor "${name}" row ${r} group ${g}: range [${min}, ${max}] overflows f32; cannot quantize`,
          );
        }
        if (scale === 0) scale = 1;
        offset = clamp(roundHalfToEven(Math.fround(-min / scale)), 0, 15);
        zeroPoints![r * groups + g] = offset;
      } else {
        scale = Math.fround(Math.max(max, -min) / 7) || 1;
        offset = 8;
      }
      scales[r * groups + g] = scale;
      for (let c = 0; c < groupSize; c++) {
        const q = roundHalfToEven(Math.fround(group[c]! / scale)) + offset;
        codes[r * cols + g * groupSize + c] = clamp(q, 0, 15);
      }
    }
  }
  return {
    packed: packInt4(codes),
    scales,
    zeroPoints,
    n: rows,
    k: cols,
    groupSize,
  };
}

/**
 * Packs 4-bit codes (0–15), two per byte: element 2j in the low nibble of
 * byte j, element 2j + 1 in the high nibble.
 *
 * @example
 * ```ts
 * import { packInt4 } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...packInt4(new Uint8Array([1, 2, 15, 0]))], [0x21, 0x0f]);
 * ```
 */
export function packInt4(codes: Uint8Array): Uint8Array {
  if (codes.length % 2 !== 0) {
    throw new RangeError(
      `packInt4() needs an even number of codes, got ${codes.length}`,
    );
  }
  const out = new Uint8Array(codes.length / 2);
  for (let j = 0; j < out.length; j++) {
    const lo = codes[2 * j]!, hi = codes[2 * j + 1]!;
    if (lo > 15 || hi > 15) {
      throw new RangeError(
        `packInt4(): code ${lo > 15 ? lo : hi} at ${
          lo > 15 ? 2 * j : 2 * j + 1
        } does not fit in 4 bits`,
      );
    }
    out[j] = lo | (hi << 4);
  }
  return out;
}

/**
 * Unpacks bytes into their 4-bit codes (0–15), low nibble first: the inverse
 * of {@linkcode packInt4}.
 *
 * @example
 * ```ts
 * import { unpackInt4 } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...unpackInt4(new Uint8Array([0x21, 0x0f]))], [1, 2, 15, 0]);
 * ```
 */
export function unpackInt4(packed: Uint8Array): Uint8Array {
  const out = new Uint8Array(packed.length * 2);
  for (let j = 0; j < packed.length; j++) {
    out[2 * j] = packed[j]! & 15;
    out[2 * j + 1] = packed[j]! >> 4;
  }
  return out;
}

/**
 * The float weights a 4-bit weight stands for:
 * `f32((code − offset) · scale)`, with offset 8 (symmetric) or the group's
 * zero point; f32 [n, k] row-major.
 *
 * @example
 * ```ts
 * import { dequantizeInt4, quantizeInt4 } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const w = Float32Array.from({ length: 64 }, (_, i) => (i - 32) / 32);
 * const q = quantizeInt4(w, "f32", 1, 64, { groupSize: 32, asymmetric: true });
 * const back = dequantizeInt4(q); // each group spans 1, so scale ≈ 1/15
 * assert.ok(back.every((v, i) => Math.abs(v - w[i]) <= q.scales[i >> 5] / 2 + 1e-7));
 * ```
 */
export function dequantizeInt4(w: Int4Weight): Float32Array {
  const { packed, scales, zeroPoints, n, k, groupSize } = w;
  const groups = k / groupSize;
  const out = new Float32Array(n * k);
  for (let e = 0; e < n * k; e++) {
    const sg = Math.floor(e / k) * groups + Math.floor((e % k) / groupSize);
    const code = (packed[e >> 1]! >> ((e & 1) * 4)) & 15;
    out[e] = (code - (zeroPoints ? zeroPoints[sg]! : 8)) * scales[sg]!;
  }
  return out;
}
