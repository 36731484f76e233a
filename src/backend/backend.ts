/**
 * The interface every compute backend implements (CPU typed arrays, WebGPU).
 * Layers call it; kernels never leak into layers.
 *
 * @module
 */

import type { FloatDType } from "../dtype.ts";

/** The names of the backends. */
export type BackendName = "cpu" | "webgpu";

/** What {@linkcode getBackend} reports. */
export interface BackendInfo {
  /** Which backend runs `forward`. */
  name: BackendName;
  /** Why it was chosen, in words (for `tinyq inspect`, `demo`, `eval`). */
  reason: string;
  /** The WebGPU adapter's description, when WebGPU is active. */
  adapter?: GPUAdapterInfo;
}

/** Activations: f32, f16 (`Float16Array`) or bf16 (raw `Uint16Array` bits). */
export type Activations = Float32Array | Float16Array | Uint16Array;

/**
 * An int8 weight as the kernels take it. The object's identity is the cache
 * key for resources a backend keeps for it (GPU buffers): build it once per
 * quantized layer and pass the same object on every call.
 */
export interface Int8Weight {
  /** Quantized values, row-major [n, k] (Linear orientation: out × in). */
  readonly q: Int8Array;
  /** One f32 scale per output row, [n]. */
  readonly scales: Float32Array;
  /** One zero point per output row (asymmetric weights), or null. */
  readonly zeroPoints: Int8Array | null;
  /** Output features (rows). */
  readonly n: number;
  /** Input features (columns). */
  readonly k: number;
}

/**
 * The arrays of an {@linkcode Int8Weight} (codes, scales, zero points or
 * null), as `CpuBackend.allocInt8Weight` hands them out in shared memory.
 */
export type Int8WeightArrays = Pick<Int8Weight, "q" | "scales" | "zeroPoints">;

/**
 * A group-wise 4-bit weight as the kernels take it. Like
 * {@linkcode Int8Weight}, the object's identity is the cache key for what a
 * backend keeps for it (GPU buffers): build it once per layer.
 *
 * Element `[j, t]` of the [n, k] matrix is the nibble `e = j·k + t` of
 * `packed`: the low nibble of byte `e >> 1` when `e` is even, the high nibble
 * when odd. Nibbles are unsigned codes: `q + 8` for symmetric weights (so the
 * weight is `(code − 8) · scale`), `q` for asymmetric ones (weight
 * `(code − zeroPoint) · scale`). Scales and zero points are [n, k / groupSize]
 * row-major.
 */
export interface Int4Weight {
  /** Two 4-bit codes per byte, row-major [n, k / 2]. */
  readonly packed: Uint8Array;
  /** One f32 scale per group, [n, k / groupSize]. */
  readonly scales: Float32Array;
  /** One zero point (0–15) per group for asymmetric weights, or null (symmetric: 8). */
  readonly zeroPoints: Uint8Array | null;
  /** Output features (rows). */
  readonly n: number;
  /** Input features (columns), a multiple of `groupSize`. */
  readonly k: number;
  /** Consecutive input features sharing a scale: 32, 64 or 128. */
  readonly groupSize: number;
}

/** A plain f32 weight, row-major [n, k]. Identity is the cache key, as above. */
export interface F32Weight {
  /** The values, row-major [n, k]. */
  readonly data: Float32Array;
  /** Output features (rows). */
  readonly n: number;
  /** Input features (columns). */
  readonly k: number;
}

/** A compute backend. */
export interface Backend {
  /** Which backend this is and why it was chosen. */
  readonly info: BackendInfo;
  /**
   * `y[m, j] = Σₖ x[m, k] · (q[j, k] − zp[j]) · scale[j] + bias[j]` with f32
   * accumulation. `x` is [m, k] in `xDtype`; the result is f32 [m, n].
   */
  linearInt8(
    x: Activations,
    xDtype: FloatDType,
    m: number,
    w: Int8Weight,
    bias: Float32Array | null,
  ): Promise<Float32Array>;
  /** `y = x @ wᵀ + bias` in f32, `x` [m, k], result [m, n]. */
  linearF32(
    x: Float32Array,
    m: number,
    w: F32Weight,
    bias: Float32Array | null,
  ): Promise<Float32Array>;
  /**
   * W8A8: each row of `x` [m, k] is quantized to int8 with its own scale
   * `s_x = f32(absmax / 127)`, the product with `(q − zp)` is exact in int32,
   * and `y = f32(f32(f32(acc) · s_x) · scale[j]) + bias[j]`.
   */
  linearW8A8(
    x: Float32Array,
    m: number,
    w: Int8Weight,
    bias: Float32Array | null,
  ): Promise<Float32Array>;
  /**
   * W4A16: `y[i, j] = Σ_groups scale · Σ x · (code − zp) + bias[j]` over the
   * 4-bit codes of `w`, f32 accumulation; `x` [m, k] in `xDtype`, result f32.
   */
  linearInt4(
    x: Activations,
    xDtype: FloatDType,
    m: number,
    w: Int4Weight,
    bias: Float32Array | null,
  ): Promise<Float32Array>;
  /** Frees what the backend keeps for a weight (wasm copies, GPU buffers). */
  release(w: Int8Weight | F32Weight | Int4Weight): void;
}
