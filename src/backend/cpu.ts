/**
 * The CPU backend: WebAssembly SIMD kernels on every core, with the plain
 * references as the fallback. Each kernel family sits in its own file beside
 * its plain reference — `linear_int8.ts`, `linear_f32.ts`, `linear_w8a8.ts`
 * (int8 activations quantized per token, exact int32 sums: the bits of
 * `referenceLinearW8A8`), `linear_int4.ts` (group-wise 4-bit weights
 * unpacked in registers) — and this class dispatches to the wasm kernels,
 * the JavaScript fast kernels of the low-bit files, or the references.
 *
 * Environment (read when a backend is created; `--allow-env` needed, else
 * the defaults):
 * - `TINYQ_THREADS=N` — threads for the matrix products (default
 *   `navigator.hardwareConcurrency`, at most 16). Work is split by output
 *   features between the calling thread and N − 1 workers that start on
 *   first need and never keep the process alive; products under ~1M
 *   multiply-adds stay on the calling thread.
 * - `TINYQ_CPU_KERNEL=wasm|reference` — `reference` forces the plain kernels
 *   (also for quantization, and `referenceLinearW8A8` / `referenceLinearInt4`
 *   for the low-bit schemes); `wasm` is the default.
 *
 * The fast kernels sum in f32 in a blocked order, so results differ from the
 * reference by rounding only (well within 1e-5 of Σ|x·w|). A weight is copied
 * once into shared WebAssembly memory, keyed by the weight object, and freed
 * by {@linkcode CpuBackend.release} or when the object is garbage-collected.
 *
 * @module
 */

import type { FloatDType } from "../dtype.ts";
import { floatArrayToF32 } from "../dtype.ts";
import type {
  Activations,
  Backend,
  BackendInfo,
  F32Weight,
  Int4Weight,
  Int8Weight,
  Int8WeightArrays,
} from "./backend.ts";
import { referenceLinearF32 } from "./linear_f32.ts";
import { referenceLinearInt8 } from "./linear_int8.ts";
import { linearInt4, referenceLinearInt4 } from "./linear_int4.ts";
import { linearW8A8, referenceLinearW8A8 } from "./linear_w8a8.ts";
import {
  type CpuKernel,
  defaultKernel,
  defaultThreads,
  parseKernel,
  parseThreads,
} from "./_cpu_config.ts";
import { type WasmPool, wasmPool } from "./_cpu_pool.ts";
import type { WasmBuild } from "./_cpu_wasm.ts";
import {
  checkActivations,
  checkInt4Weight,
  checkInt8Weight,
  checkShapes,
  W8A8_MAX_K,
} from "./_checks.ts";

export type { CpuKernel } from "./_cpu_config.ts";
export type { WasmBuild } from "./_cpu_wasm.ts";

/** Options of {@linkcode CpuBackend}; each defaults to its environment variable. */
export interface CpuBackendOptions {
  /** Threads for the matrix products (default `TINYQ_THREADS`, else the CPU count, at most 16). */
  threads?: number;
  /**
   * `"wasm"` (default, or `TINYQ_CPU_KERNEL`: the relaxed-SIMD build where
   * the runtime validates it, else SIMD128), `"simd128"` (that build
   * forced) or `"reference"`.
   */
  kernel?: CpuKernel;
}

/**
 * The CPU backend.
 *
 * @example Multiply by an int8 weight on two threads
 * ```ts
 * import { CpuBackend } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const cpu = new CpuBackend("example", { threads: 2 });
 * const w = {
 *   q: new Int8Array([1, 2, -3, 4]),
 *   scales: new Float32Array([0.5, 0.25]),
 *   zeroPoints: null,
 *   n: 2,
 *   k: 2,
 * };
 * const y = await cpu.linearInt8(new Float32Array([3, 4]), "f32", 1, w, null);
 * assert.deepEqual([...y], [5.5, 1.75]);
 * cpu.release(w);
 * ```
 */
export class CpuBackend implements Backend {
  /** Which backend this is and why it was chosen. */
  readonly info: BackendInfo;
  /** Threads the matrix products use. */
  readonly threads: number;
  /** The kernels in use: `"wasm"`, `"simd128"`, or `"reference"` (asked for, or no WebAssembly). */
  readonly kernel: CpuKernel;
  /** The WebAssembly build in use (`"relaxed"` or `"simd128"`), null for the reference. */
  readonly build: WasmBuild | null;
  readonly #pool: WasmPool | null;

  /**
   * Creates the CPU backend; `reason` says why it was chosen. Throws a
   * RangeError naming the variable when `TINYQ_THREADS` or
   * `TINYQ_CPU_KERNEL` is invalid.
   */
  constructor(reason = "CPU requested", options: CpuBackendOptions = {}) {
    this.threads = options.threads === undefined
      ? defaultThreads()
      : parseThreads(options.threads, "threads");
    const kernel = options.kernel === undefined
      ? defaultKernel()
      : parseKernel(options.kernel, "kernel");
    this.#pool = kernel === "reference"
      ? null
      : wasmPool(kernel === "simd128" ? "simd128" : undefined);
    this.kernel = this.#pool ? kernel : "reference";
    this.build = this.#pool?.build ?? null;
    const detail = this.#pool
      ? `wasm ${
        this.#pool.build === "relaxed" ? "relaxed SIMD" : "SIMD"
      }, ${this.threads} thread${this.threads === 1 ? "" : "s"}`
      : kernel !== "reference"
      ? "reference kernels: WebAssembly SIMD unavailable"
      : "reference kernels";
    this.info = { name: "cpu", reason: `${reason} (${detail})` };
    // In the background: workers are unref()ed, so this never keeps a
    // process alive, and a failure here only means a slower first call.
    this.warm().catch(() => {});
  }

  /** See {@linkcode Backend.linearInt8}. */
  async linearInt8(
    x: Activations,
    xDtype: FloatDType,
    m: number,
    w: Int8Weight,
    bias: Float32Array | null,
  ): Promise<Float32Array> {
    checkShapes("linearInt8", x.length, m, w.k, w.n, bias);
    checkInt8Weight(w, "linearInt8");
    if (m * w.n === 0) return new Float32Array(m * w.n);
    const pool = this.#pool;
    const y = pool &&
      await pool.linearInt8(x, xDtype, m, w, bias, this.threads);
    return y ?? referenceLinearInt8(floatArrayToF32(x, xDtype), m, w, bias);
  }

  /** See {@linkcode Backend.linearF32}. */
  async linearF32(
    x: Float32Array,
    m: number,
    w: F32Weight,
    bias: Float32Array | null,
  ): Promise<Float32Array> {
    checkShapes("linearF32", x.length, m, w.k, w.n, bias);
    if (w.data.length < w.n * w.k) {
      throw new RangeError(
        `linearF32: weight [${w.n}, ${w.k}] needs ${
          w.n * w.k
        } values, got ${w.data.length}`,
      );
    }
    if (m * w.n === 0) return new Float32Array(m * w.n);
    const pool = this.#pool;
    const y = pool && await pool.linearF32(x, m, w, bias, this.threads);
    return y ?? referenceLinearF32(x, m, w, bias);
  }

  /**
   * W8A8: each row of `x` (f32 [m, k]) quantized to int8 with its own scale
   * (as {@linkcode quantizeActivationsPerToken}), exact int32 dot products
   * with the int8 weight (i16 SIMD, `i32x4.dot_i16x8_s`), then
   * `y = f32(f32(f32(acc) · s_x) · s_w)` (+ bias): the values of
   * {@linkcode referenceLinearW8A8}, bit for bit, on every path. Beyond
   * k = 65536 (where int32 sums could overflow) it runs the exact JS kernel.
   *
   * @example Bit-identical to the reference
   * ```ts
   * import { CpuBackend } from "@tinyq/tinyq";
   * import { referenceLinearW8A8 } from "./linear_w8a8.ts";
   * import assert from "node:assert/strict";
   * const cpu = new CpuBackend("example", { threads: 1 });
   * const w = {
   *   q: new Int8Array([3, -5, 7, 1]),
   *   scales: new Float32Array([0.1, 0.2]),
   *   zeroPoints: null,
   *   n: 2,
   *   k: 2,
   * };
   * const x = new Float32Array([0.5, -2]);
   * const y = await cpu.linearW8A8(x, 1, w, null);
   * assert.deepEqual(y, referenceLinearW8A8(x, 1, w, null));
   * cpu.release(w);
   * ```
   */
  async linearW8A8(
    x: Float32Array,
    m: number,
    w: Int8Weight,
    bias: Float32Array | null,
  ): Promise<Float32Array> {
    checkShapes("linearW8A8", x.length, m, w.k, w.n, bias);
    checkInt8Weight(w, "linearW8A8");
    if (this.kernel === "reference") return referenceLinearW8A8(x, m, w, bias);
    const pool = w.k <= W8A8_MAX_K && m * w.n > 0 ? this.#pool : null;
    const y = pool && await pool.linearW8A8(x, m, w, bias, this.threads);
    return y ?? linearW8A8(x, m, w, bias);
  }

  /**
   * W4A16: `x` ([m, k] in `xDtype`: a Float32Array, Float16Array or the
   * bf16 bits in a Uint16Array) times a group-wise 4-bit weight, the nibbles
   * unpacked in SIMD registers (never a dequantized copy), f32 sums scaled
   * once per group; result f32 [m, n], within f32 rounding of
   * {@linkcode referenceLinearInt4}.
   *
   * @example
   * ```ts
   * import { CpuBackend } from "@tinyq/tinyq";
   * import assert from "node:assert/strict";
   * const cpu = new CpuBackend("example", { threads: 1 });
   * // 32 inputs, one group; codes 9 (= +1, symmetric) everywhere, scale 0.5.
   * const w = {
   *   packed: new Uint8Array(16).fill(0x99),
   *   scales: new Float32Array([0.5]),
   *   zeroPoints: null,
   *   n: 1,
   *   k: 32,
   *   groupSize: 32,
   * };
   * const y = await cpu.linearInt4(new Float16Array(32).fill(1), "f16", 1, w, null);
   * assert.equal(y[0], 16);
   * cpu.release(w);
   * ```
   */
  async linearInt4(
    x: Activations,
    xDtype: FloatDType,
    m: number,
    w: Int4Weight,
    bias: Float32Array | null,
  ): Promise<Float32Array> {
    checkActivations(x, xDtype, "linearInt4");
    checkShapes("linearInt4", x.length, m, w.k, w.n, bias);
    checkInt4Weight(w, "linearInt4");
    if (this.kernel === "reference") {
      return referenceLinearInt4(floatArrayToF32(x, xDtype), m, w, bias);
    }
    const pool = m * w.n * w.k > 0 ? this.#pool : null;
    const y = pool &&
      await pool.linearInt4(x, xDtype, m, w, bias, this.threads);
    return y ?? linearInt4(floatArrayToF32(x, xDtype), m, w, bias);
  }

  /**
   * Makes the copy of a weight the kernels keep now rather than on its first
   * call (a model loader calls this for every weight, so that the first
   * forward runs at the steady state). Returns false where the reference
   * kernels run or the copy found no room. Calling it is never required.
   */
  async prepare(w: Int8Weight | F32Weight | Int4Weight): Promise<boolean> {
    return this.#pool ? await this.#pool.prepare(w) : false;
  }

  /**
   * Starts this backend's worker threads and gets the kernels optimised on
   * each, so that the first call runs at the steady state; the constructor
   * starts it in the background, and every call waits for it.
   */
  warm(): Promise<void> {
    return this.#pool?.warm(this.threads) ?? Promise.resolve();
  }

  /**
   * Lets an int8 weight live once: the kernels' copy of it (made now if
   * needed) is handed over as views of shared memory with exactly the
   * weight's codes, scales and zero points, which the caller puts in place
   * of its own arrays (so the originals can be collected); calls on a weight
   * made of these views use them without a copy, and their memory is freed
   * when the codes' view is collected. Null where the reference kernels run
   * or the copy cannot be handed over (k not a multiple of 16, no room).
   * Quantized layers call it after their first forward on the CPU.
   */
  async adoptWeight(
    w: Int8Weight,
  ): Promise<Int8WeightArrays | null> {
    return this.#pool ? await this.#pool.adopt(w) : null;
  }

  /**
   * Arrays for an int8 weight [n, k] made directly in the kernels' shared
   * memory — codes, scales and, when `asymmetric`, zero points, zero-filled
   * — for a loader that reads or quantizes into them, so that the weight is
   * never held twice (an {@linkcode CpuBackend.adoptWeight} without the
   * copy). A weight built from them runs without a copy; their memory is
   * freed when the codes' array is garbage-collected. Null where the
   * reference kernels run, k is not a multiple of 16, or there is no room.
   *
   * @example
   * ```ts
   * import { CpuBackend } from "@tinyq/tinyq";
   * import assert from "node:assert/strict";
   * const cpu = new CpuBackend("example", { threads: 1 });
   * const a = await cpu.allocInt8Weight(2, 16, false);
   * assert.ok(a);
   * a.q.fill(1);
   * a.scales.fill(0.5);
   * const w = { q: a.q, scales: a.scales, zeroPoints: null, n: 2, k: 16 };
   * const y = await cpu.linearInt8(new Float32Array(16).fill(1), "f32", 1, w, null);
   * assert.deepEqual([...y], [8, 8]);
   * ```
   */
  async allocInt8Weight(
    n: number,
    k: number,
    asymmetric: boolean,
  ): Promise<Int8WeightArrays | null> {
    return this.#pool ? await this.#pool.allocInt8(n, k, asymmetric) : null;
  }

  /** Frees the copy of a weight the kernels keep (it is made again if used). */
  release(w: Int8Weight | F32Weight | Int4Weight): void {
    this.#pool?.release(w);
  }
}
