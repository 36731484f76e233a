// What the WebGPU test files share: the adapter and backends under test,
// their random weights, and the check of a result against the CPU reference.

import assert from "node:assert/strict";
import { basename } from "node:path";
import {
  createWebGpuBackend,
  probeWebGpu,
  type WebGpuBackend,
  type WebGpuBackendOptions,
} from "../src/backend/webgpu.ts";
import type { Int8Weight } from "../src/backend/backend.ts";
import { rng } from "./_random.ts";

/** What the WebGPU probe found. */
export const probe = await probeWebGpu();

// CI sets TINYQ_REQUIRE_WEBGPU=1: there a missing adapter fails every test
// instead of ignoring it.
/** Whether the WebGPU tests are ignored (no adapter, and none required). */
export const ignore = !probe.adapter &&
  Deno.env.get("TINYQ_REQUIRE_WEBGPU") !== "1";
if (ignore) {
  console.warn(
    `${
      basename(Deno.mainModule, ".ts")
    }: ignoring the WebGPU tests, no adapter (${probe.description}); ` +
      "set TINYQ_REQUIRE_WEBGPU=1 to fail instead",
  );
}

/** The adapter under test (a test fails without one). */
export function adapter(): GPUAdapter {
  assert.ok(probe.adapter, `No WebGPU adapter: ${probe.description}`);
  return probe.adapter;
}

/**
 * The two ends of the feature matrix: whatever the device offers (on lavapipe
 * native f16 and dot4I8Packed), and core WGSL only (f16 through
 * unpack2x16float, int8 dot products by shifts).
 */
export const VARIANTS: Record<string, WebGpuBackendOptions> = {
  native: {},
  fallback: { disableShaderF16: true, disableDot4: true },
};

const backends = new Map<string, Promise<WebGpuBackend>>();
const made: WebGpuBackend[] = [];

// No device outlives its test file: `deno test --parallel` runs every file in
// one process, and a file's devices (with lavapipe's threads behind them)
// must be gone before that process exits. (Sync: unload runs no microtasks.)
addEventListener("unload", () => {
  for (const gpu of made.splice(0)) gpu.destroy();
});

/** The backend of `variant`, made once per test file. */
export function backend(variant: string): Promise<WebGpuBackend> {
  let b = backends.get(variant);
  if (!b) {
    b = createWebGpuBackend(adapter(), "test", VARIANTS[variant]).then(
      (gpu) => (made.push(gpu), gpu),
    );
    backends.set(variant, b);
  }
  return b;
}

/** A random int8 [n, k] weight with small scales and, if `zp`, zero points. */
export function int8Weight(
  { n, k, zp }: { n: number; k: number; zp: boolean },
  seed: number,
): Int8Weight {
  const r = rng(seed);
  return {
    q: Int8Array.from({ length: n * k }, () => r() * 256 - 128),
    scales: Float32Array.from({ length: n }, () => 1e-3 + r() * 2e-2),
    zeroPoints: zp ? Int8Array.from({ length: n }, () => r() * 41 - 20) : null,
    n,
    k,
  };
}

/** Rows `rows` of the row-major [*, k] array `x`, in that order. */
export function pickRows(
  x: Float32Array,
  k: number,
  rows: number[],
): Float32Array {
  const out = new Float32Array(rows.length * k);
  rows.forEach((i, r) => out.set(x.subarray(i * k, (i + 1) * k), r * k));
  return out;
}

/** Euclidean norm of each row of a row-major [rows, k] array, less `shift[r]`. */
export function rowNorms(
  a: ArrayLike<number>,
  rows: number,
  k: number,
  shift?: Int8Array | null,
): Float64Array {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let t = 0; t < k; t++) {
      const v = a[r * k + t]! - (shift ? shift[r]! : 0);
      s += v * v;
    }
    out[r] = Math.sqrt(s);
  }
  return out;
}

/**
 * Asserts `got` matches `want` on the given rows. The budget of output (i, j)
 * is `rel · (scale_j · ‖x_i‖·‖w_j − zp_j‖ + |bias_j|)` (no scale: 1):
 * Cauchy–Schwarz bounds Σ|x·w|, the scale of any f32 summation-order
 * difference.
 */
export function assertClose(
  got: Float32Array,
  want: Float32Array,
  rows: number[],
  n: number,
  xNorm: Float64Array,
  wNorm: Float64Array,
  scales: Float32Array | null,
  bias: Float32Array | null,
  rel: number,
): void {
  for (const [wi, i] of rows.entries()) {
    for (let j = 0; j < n; j++) {
      const g = got[i * n + j]!, e = want[wi * n + j]!;
      const budget = rel *
        ((scales ? scales[j]! : 1) * xNorm[wi]! * wNorm[j]! +
          Math.abs(bias ? bias[j]! : 0));
      if (!(Math.abs(g - e) <= budget + 1e-30)) {
        assert.fail(
          `y[${i}, ${j}] = ${g}, reference ${e} (|diff| ${
            Math.abs(g - e)
          } > budget ${budget})`,
        );
      }
    }
  }
}
