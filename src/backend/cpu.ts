/**
 * The CPU backend: WebAssembly SIMD kernels on every core, with the plain
 * typed-array kernels of `cpu_reference.ts` as the fallback.
 *
 * Environment (read when a backend is created; `--allow-env` needed, else
 * the defaults):
 * - `TINYQ_THREADS=N` — threads for the matrix products (default
 *   `navigator.hardwareConcurrency`, at most 16). Work is split by output
 *   features between the calling thread and N − 1 workers that start on
 *   first need and never keep the process alive; products under ~1M
 *   multiply-adds stay on the calling thread.
 * - `TINYQ_CPU_KERNEL=wasm|reference` — `reference` forces the plain kernels
 *   (also for quantization); `wasm` is the default.
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
  Int8Weight,
} from "./backend.ts";
import { referenceLinearF32, referenceLinearInt8 } from "./cpu_reference.ts";
import {
  type CpuKernel,
  defaultKernel,
  defaultThreads,
  parseKernel,
  parseThreads,
} from "./_cpu_config.ts";
import { wasmPool } from "./_cpu_pool.ts";

export type { CpuKernel } from "./_cpu_config.ts";

/** Options of {@linkcode CpuBackend}; each defaults to its environment variable. */
export interface CpuBackendOptions {
  /** Threads for the matrix products (default `TINYQ_THREADS`, else the CPU count, at most 16). */
  threads?: number;
  /** `"wasm"` (default, or `TINYQ_CPU_KERNEL`) or `"reference"`. */
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
  /** The kernels in use: `"wasm"`, or `"reference"` (asked for, or no WebAssembly). */
  readonly kernel: CpuKernel;

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
    this.kernel = kernel === "wasm" && wasmPool() ? "wasm" : "reference";
    const detail = this.kernel === "wasm"
      ? `wasm SIMD, ${this.threads} thread${this.threads === 1 ? "" : "s"}`
      : kernel === "wasm"
      ? "reference kernels: WebAssembly SIMD unavailable"
      : "reference kernels";
    this.info = { name: "cpu", reason: `${reason} (${detail})` };
  }

  /** See {@linkcode Backend.linearInt8}. */
  async linearInt8(
    x: Activations,
    xDtype: FloatDType,
    m: number,
    w: Int8Weight,
    bias: Float32Array | null,
  ): Promise<Float32Array> {
    checkShapes(x.length, m, w.n, w.k, bias, "linearInt8");
    checkInt8(w);
    if (m * w.n === 0) return new Float32Array(m * w.n);
    const pool = this.kernel === "wasm" ? wasmPool() : null;
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
    checkShapes(x.length, m, w.n, w.k, bias, "linearF32");
    if (w.data.length < w.n * w.k) {
      throw new RangeError(
        `linearF32: weight [${w.n}, ${w.k}] needs ${
          w.n * w.k
        } values, got ${w.data.length}`,
      );
    }
    if (m * w.n === 0) return new Float32Array(m * w.n);
    const pool = this.kernel === "wasm" ? wasmPool() : null;
    const y = pool && await pool.linearF32(x, m, w, bias, this.threads);
    return y ?? referenceLinearF32(x, m, w, bias);
  }

  /** Frees the copy of a weight the kernels keep (it is made again if used). */
  release(w: Int8Weight | F32Weight): void {
    wasmPool()?.release(w);
  }
}

function checkShapes(
  xLength: number,
  m: number,
  n: number,
  k: number,
  bias: Float32Array | null,
  op: string,
): void {
  for (const [name, v] of [["m", m], ["n", n], ["k", k]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new RangeError(
        `${op}: ${name} must be a non-negative integer, got ${v}`,
      );
    }
  }
  if (xLength !== m * k) {
    throw new RangeError(
      `${op}: input has ${xLength} values, expected ${m} × ${k} = ${m * k}`,
    );
  }
  if (bias && bias.length !== n) {
    throw new RangeError(
      `${op}: bias has ${bias.length} values, expected ${n}`,
    );
  }
}

function checkInt8(w: Int8Weight): void {
  if (
    w.q.length < w.n * w.k || w.scales.length < w.n ||
    (w.zeroPoints !== null && w.zeroPoints.length < w.n)
  ) {
    throw new RangeError(
      `linearInt8: weight [${w.n}, ${w.k}] has ${w.q.length} values, ${w.scales.length} scales` +
        (w.zeroPoints ? `, ${w.zeroPoints.length} zero points` : ""),
    );
  }
}
