/**
 * Settings of the CPU kernels, from the environment:
 *
 * - `TINYQ_THREADS=N`: threads for the matrix products (default
 *   `navigator.hardwareConcurrency`, at most 16: the products are mostly
 *   bound by memory bandwidth, and each worker costs an isolate); 1 runs
 *   everything on the calling thread.
 * - `TINYQ_CPU_KERNEL=wasm|simd128|reference`: `wasm` (default) runs the
 *   WebAssembly kernels, the relaxed-SIMD build where the runtime validates
 *   it, else the SIMD128 one; `simd128` forces the SIMD128 build;
 *   `reference` forces the plain typed-array kernels
 *   (src/backend/cpu_reference.ts, the reference* kernels of
 *   src/backend/cpu_lowbit.ts, src/quant/quantize_rows.ts) everywhere.
 *
 * Without `--allow-env` the defaults apply (and Deno does not prompt).
 *
 * @module
 */

/**
 * Which CPU kernels run: the WebAssembly ones (the best build), the SIMD128
 * build of them, or the plain reference.
 */
export type CpuKernel = "wasm" | "simd128" | "reference";

/** The most threads a pool may use. */
export const MAX_THREADS = 256;

/** The most threads used when `TINYQ_THREADS` is not set. */
export const DEFAULT_MAX_THREADS = 16;

function readEnv(name: string): string | undefined {
  try {
    const state = Deno.permissions.querySync({ name: "env", variable: name })
      .state;
    if (state !== "granted") return undefined;
    const value = Deno.env.get(name)?.trim();
    return value === "" ? undefined : value;
  } catch {
    return undefined;
  }
}

/** Parses a thread count; `source` names where it came from for the error. */
export function parseThreads(value: string | number, source: string): number {
  const n = typeof value === "number" ? value : Number(value);
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) {
    throw new RangeError(
      `${source} must be an integer from 1 to ${MAX_THREADS}, got "${value}"`,
    );
  }
  return n;
}

/** Parses a kernel choice; `source` names where it came from for the error. */
export function parseKernel(value: string, source: string): CpuKernel {
  const v = value.trim().toLowerCase();
  if (v === "wasm" || v === "simd128" || v === "reference") return v;
  throw new RangeError(
    `${source} must be "wasm", "simd128" or "reference", got "${value}"`,
  );
}

/** Threads from `TINYQ_THREADS`, else the number of logical CPUs (at most 16). */
export function defaultThreads(): number {
  const env = readEnv("TINYQ_THREADS");
  if (env !== undefined) return parseThreads(env, "TINYQ_THREADS");
  const cpus = globalThis.navigator?.hardwareConcurrency ?? 1;
  return Math.min(DEFAULT_MAX_THREADS, Math.max(1, cpus));
}

/** The kernel from `TINYQ_CPU_KERNEL`, else `wasm`. */
export function defaultKernel(): CpuKernel {
  const env = readEnv("TINYQ_CPU_KERNEL");
  return env === undefined ? "wasm" : parseKernel(env, "TINYQ_CPU_KERNEL");
}
