/**
 * WebGPU against the CPU kernels on decode (M = 1) and prefill (M = 128)
 * shapes of a quantized Linear, M × K × N: int8 weights with f32/f16
 * activations (W8A32/W8A16), W8A8 (int8 activations quantized per token on
 * the GPU) and W4A16 (group-wise int4 weights).
 *
 * `deno run -A bench/webgpu_bench.ts` prints a table: median time per call,
 * GFLOP/s (2·M·K·N per call) and effective weight GB/s (every weight byte the
 * kernel reads: codes, scales, zero points, per call). A WebGPU call includes
 * uploading x and reading y back, which Deno's `mapAsync` polling rounds up to
 * ~10 ms, so the table also gives the kernels' own GPU time (timestamp
 * queries; for W8A8 it includes the activation quantization) and the rates
 * it implies. `deno bench -A bench/webgpu_bench.ts` times the same calls.
 * `TINYQ_BENCH_FAST=1` leaves out the slow plain-JS reference on prefill.
 *
 * @module
 */

import type {
  Backend,
  Int4Weight,
  Int8Weight,
} from "../src/backend/backend.ts";
import type { WebGpuBackend } from "../src/backend/webgpu.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { createWebGpuBackend, probeWebGpu } from "../src/backend/webgpu.ts";

const DECODE = "decode 1×4096×4096";
const PREFILL = "prefill 128×4096×4096";
const SHAPES: [string, number, number, number][] = [
  [DECODE, 1, 4096, 4096],
  ["decode 1×4096×14336", 1, 4096, 14336],
  [PREFILL, 128, 4096, 4096],
];

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 24;
}

function int8Weight(n: number, k: number, zp: boolean): Int8Weight {
  const r = lcg(1);
  return {
    q: Int8Array.from({ length: n * k }, r),
    scales: new Float32Array(n).fill(0.01),
    zeroPoints: zp ? Int8Array.from({ length: n }, (_, j) => j % 9 - 4) : null,
    n,
    k,
  };
}

function int4Weight(
  n: number,
  k: number,
  g: number,
  asym: boolean,
): Int4Weight {
  const r = lcg(2);
  return {
    packed: Uint8Array.from({ length: n * k / 2 }, r),
    scales: new Float32Array(n * k / g).fill(0.01),
    zeroPoints: asym
      ? Uint8Array.from({ length: n * k / g }, (_, i) => i % 16)
      : null,
    n,
    k,
    groupSize: g,
  };
}

const bytes8 = (w: Int8Weight) =>
  w.q.byteLength + w.scales.byteLength + (w.zeroPoints?.byteLength ?? 0);
const bytes4 = (w: Int4Weight) =>
  w.packed.byteLength + w.scales.byteLength + (w.zeroPoints?.byteLength ?? 0);

function x32(m: number, k: number): Float32Array {
  return Float32Array.from({ length: m * k }, (_, i) => Math.sin(i) * 2);
}

/** One line of the table: a kernel on a shape. */
interface Row {
  shape: string;
  m: number;
  k: number;
  n: number;
  label: string;
  weightBytes: number;
  fn: () => Promise<unknown> | unknown;
  gpu?: WebGpuBackend;
}

const probe = await probeWebGpu();
const gpu = probe.adapter
  ? await createWebGpuBackend(probe.adapter, "bench", { timing: true })
  : null;
if (!gpu) {
  console.warn(`webgpu_bench: no WebGPU adapter (${probe.description})`);
}
const cpu = new CpuBackend("bench");
const reference = new CpuBackend("bench", { kernel: "reference" });
const fast = Deno.env.get("TINYQ_BENCH_FAST") === "1";

const rows: Row[] = [];
for (const [shape, m, k, n] of SHAPES) {
  const base = { shape, m, k, n };
  const w = int8Weight(n, k, false);
  const xf = x32(m, k), xh = Float16Array.from(xf);
  const b8 = bytes8(w);
  if (gpu) {
    rows.push(
      {
        ...base,
        label: "webgpu W8A32",
        weightBytes: b8,
        gpu,
        fn: () => gpu.linearInt8(xf, "f32", m, w, null),
      },
      {
        ...base,
        label: "webgpu W8A16",
        weightBytes: b8,
        gpu,
        fn: () => gpu.linearInt8(xh, "f16", m, w, null),
      },
    );
  }
  rows.push({
    ...base,
    label: "cpu W8A32",
    weightBytes: b8,
    fn: () => cpu.linearInt8(xf, "f32", m, w, null),
  });
  if (!(fast && m > 1)) {
    rows.push({
      ...base,
      label: "cpu ref W8A32",
      weightBytes: b8,
      fn: () => reference.linearInt8(xf, "f32", m, w, null),
    });
  }
  if (shape !== DECODE && shape !== PREFILL) continue;
  // The low-bit schemes, each on the GPU and on the fast CPU kernels.
  const w8z = int8Weight(n, k, true);
  const w4 = int4Weight(n, k, 128, false);
  const w4a = int4Weight(n, k, 128, true);
  const w4g32 = int4Weight(n, k, 32, false);
  const lowBit: [string, number, (b: Backend) => unknown][] = [
    ["W8A8", b8, (b) => b.linearW8A8(xf, m, w, null)],
    ["W8A8 zp", bytes8(w8z), (b) => b.linearW8A8(xf, m, w8z, null)],
    ["W4A16 g128", bytes4(w4), (b) => b.linearInt4(xh, "f16", m, w4, null)],
    [
      "W4A16 g128 zp",
      bytes4(w4a),
      (b) => b.linearInt4(xh, "f16", m, w4a, null),
    ],
    [
      "W4A16 g32",
      bytes4(w4g32),
      (b) => b.linearInt4(xh, "f16", m, w4g32, null),
    ],
  ];
  for (const [name, weightBytes, call] of lowBit) {
    if (gpu) {
      rows.push({
        ...base,
        label: `webgpu ${name}`,
        weightBytes,
        gpu,
        fn: () => call(gpu),
      });
    }
    rows.push({
      ...base,
      label: `cpu ${name}`,
      weightBytes,
      fn: () => call(cpu),
    });
  }
}

for (const r of rows) {
  Deno.bench({
    name: `${r.label} ${r.shape}`,
    group: r.shape,
    baseline: r.label === "cpu W8A32",
    n: r.m > 1 ? 3 : 20,
    warmup: 1,
    async fn() {
      await r.fn();
    },
  });
}

function median(values: number[]): number {
  const sorted = values.toSorted((a, b) => a - b);
  return sorted[sorted.length >> 1]!;
}

if (import.meta.main) {
  console.log(
    `adapter: ${probe.description}; cpu: ${cpu.info.reason}; ` +
      "W8A16 and W4A16 rows take f16 activations",
  );
  console.log(
    "shape                  kernel                  call ms  GFLOP/s    GB/s | kernel ms  GFLOP/s    GB/s",
  );
  for (const r of rows) {
    await r.fn(); // upload, compile
    const times: number[] = [], kernel: number[] = [];
    const start = performance.now();
    while (
      times.length < 15 &&
      (times.length < 3 || performance.now() - start < 2000)
    ) {
      const t = performance.now();
      await r.fn();
      times.push(performance.now() - t);
      kernel.push(r.gpu?.kernelMs ?? NaN);
    }
    const rates = (ms: number) =>
      Number.isNaN(ms)
        ? ""
        : `${ms.toFixed(2).padStart(10)}${
          ((2 * r.m * r.k * r.n) / ms / 1e6).toFixed(2).padStart(9)
        }${(r.weightBytes / ms / 1e6).toFixed(2).padStart(8)}`;
    console.log(
      `${r.shape.padEnd(23)}${r.label.padEnd(21)}${rates(median(times))} |${
        rates(median(kernel))
      }`,
    );
  }
  gpu?.destroy();
}
