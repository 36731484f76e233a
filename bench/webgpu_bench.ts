/**
 * WebGPU against the CPU backends on decode (M = 1) and prefill (M = 128)
 * shapes of an int8 Linear, M × K × N.
 *
 * `deno run -A bench/webgpu_bench.ts` prints a table: median time per call,
 * GFLOP/s (2·M·K·N per call) and effective weight GB/s (int8 weights + f32
 * scales per call). A WebGPU call includes uploading x and reading y back,
 * which Deno's `mapAsync` polling rounds up to ~10 ms, so the table also gives
 * the kernels' own GPU time (timestamp queries) and the rates it implies.
 * `deno bench -A bench/webgpu_bench.ts` times the same calls.
 * `TINYQ_BENCH_FAST=1` leaves out the slow plain-JS reference on prefill.
 *
 * @module
 */

import type { Backend, Int8Weight } from "../src/backend/backend.ts";
import type { WebGpuBackend } from "../src/backend/webgpu.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { createWebGpuBackend, probeWebGpu } from "../src/backend/webgpu.ts";
import type { FloatDType } from "../src/dtype.ts";

const SHAPES: [string, number, number, number][] = [
  ["decode 1×4096×4096", 1, 4096, 4096],
  ["decode 1×4096×14336", 1, 4096, 14336],
  ["prefill 128×4096×4096", 128, 4096, 4096],
];

const probe = await probeWebGpu();
const runs: [string, Backend, FloatDType][] = [];
if (probe.adapter) {
  const gpu = await createWebGpuBackend(probe.adapter, "bench", {
    timing: true,
  });
  runs.push(["webgpu f32", gpu, "f32"], ["webgpu f16", gpu, "f16"]);
} else {
  console.warn(`webgpu_bench: no WebGPU adapter (${probe.description})`);
}
const cpu = new CpuBackend("bench");
const reference = new CpuBackend("bench", { kernel: "reference" });
runs.push(["cpu f32", cpu, "f32"], ["cpu reference f32", reference, "f32"]);
const fast = Deno.env.get("TINYQ_BENCH_FAST") === "1";

function weight(n: number, k: number): Int8Weight {
  const q = new Int8Array(n * k);
  let s = 1;
  for (let i = 0; i < q.length; i++) {
    q[i] = (s = (s * 1103515245 + 12345) >>> 0) >>> 24;
  }
  const scales = new Float32Array(n).fill(0.01);
  return { q, scales, zeroPoints: null, n, k };
}

function activations(
  m: number,
  k: number,
  dtype: FloatDType,
): Float32Array | Float16Array {
  const x = Float32Array.from({ length: m * k }, (_, i) => Math.sin(i) * 2);
  return dtype === "f16" ? Float16Array.from(x) : x;
}

function median(values: number[]): number {
  const sorted = values.toSorted((a, b) => a - b);
  return sorted[sorted.length >> 1]!;
}

function skip(label: string, m: number): boolean {
  return fast && m > 1 && label.startsWith("cpu reference");
}

const weights = SHAPES.map(([, , k, n]) => weight(n, k));

for (const [si, [name, m, k]] of SHAPES.entries()) {
  for (const [label, backend, dtype] of runs) {
    if (skip(label, m)) continue;
    const x = activations(m, k, dtype);
    const w = weights[si]!;
    Deno.bench({
      name: `${label} ${name}`,
      group: name,
      baseline: label === "cpu f32",
      n: m > 1 ? 3 : 20,
      warmup: 1,
      async fn() {
        await backend.linearInt8(x, dtype, m, w, null);
      },
    });
  }
}

if (import.meta.main) {
  console.log(`adapter: ${probe.description}; cpu: ${cpu.info.reason}`);
  console.log(
    "shape                  backend            call ms  GFLOP/s    GB/s | kernel ms  GFLOP/s    GB/s",
  );
  for (const [si, [name, m, k, n]] of SHAPES.entries()) {
    for (const [label, backend, dtype] of runs) {
      if (skip(label, m)) continue;
      const x = activations(m, k, dtype);
      const w = weights[si]!;
      await backend.linearInt8(x, dtype, m, w, null); // upload, compile
      const times: number[] = [], kernel: number[] = [];
      const start = performance.now();
      while (
        times.length < 15 &&
        (times.length < 3 || performance.now() - start < 2000)
      ) {
        const t = performance.now();
        await backend.linearInt8(x, dtype, m, w, null);
        times.push(performance.now() - t);
        kernel.push((backend as Partial<WebGpuBackend>).kernelMs ?? NaN);
      }
      const rates = (ms: number) =>
        Number.isNaN(ms)
          ? ""
          : `${ms.toFixed(2).padStart(10)}${
            ((2 * m * k * n) / ms / 1e6).toFixed(2).padStart(9)
          }${((n * k + 4 * n) / ms / 1e6).toFixed(2).padStart(8)}`;
      console.log(
        `${name.padEnd(23)}${label.padEnd(18)}${rates(median(times))} |${
          rates(median(kernel))
        }`,
      );
    }
  }
  for (const [, backend] of runs) {
    if ("destroy" in backend) (backend as { destroy(): void }).destroy();
  }
}
