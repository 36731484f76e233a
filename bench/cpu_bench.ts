/**
 * CPU kernel benchmark (issues 5 and 8): per shape and path, the median time,
 * GFLOP/s, weight GB/s and the ratios to this library's f32 `Linear` and to
 * W8A16 with f16 activations (< 1: faster), the low-bit layers (W8A8, W4A16)
 * beside the int8 ones, and the quantization throughput in GB/s of input.
 *
 *   deno run -A bench/cpu_bench.ts [--shapes 1x4096x4096,...] [--threads N]
 *   deno bench -A bench/cpu_bench.ts      # the same paths under `deno bench`
 *
 * `--threads` sets TINYQ_THREADS for the default paths (else all cores);
 * `TINYQ_CPU_KERNEL=reference` times the plain kernels instead. For the
 * PyTorch comparison run bench/compare_torch.ts.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  f32ArrayToBf16,
  Linear,
  quantizeRowsInt8,
  setBackend,
  Tensor,
  W4A16LinearLayer,
  W8A16LinearLayer,
  W8A32LinearLayer,
  W8A8LinearLayer,
} from "../mod.ts";
import { quantizeRowsInt8Reference } from "../src/quant/quantize_rows.ts";
import {
  measureShape,
  parseShapes,
  type Shape,
  shapeName,
  SHAPES,
  table,
} from "./_cpu_cases.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { wasmPool } from "../src/backend/_cpu_pool.ts";

function gflops(s: Shape, ms: number): number {
  return (2 * s.m * s.k * s.n) / ms / 1e6;
}

/** Times quantizeRowsInt8 (and the reference) on a rows × cols bf16 matrix. */
async function quantizeRows(rows: number, cols: number): Promise<string[][]> {
  const f = new Float32Array(rows * cols);
  for (let i = 0; i < f.length; i++) {
    f[i] = Math.sin(i * 0.37) * (i % 1009 === 0 ? 40 : 1);
  }
  const bf = f32ArrayToBf16(f);
  const time = (fn: () => unknown, iters: number) => {
    fn();
    const t: number[] = [];
    for (let i = 0; i < iters; i++) {
      const t0 = performance.now();
      fn();
      t.push(performance.now() - t0);
    }
    return t.sort((a, b) => a - b)[t.length >> 1]!;
  };
  const fast = time(() => quantizeRowsInt8(bf, "bf16", rows, cols), 9);
  const ref = time(() => quantizeRowsInt8Reference(bf, "bf16", rows, cols), 3);
  await Promise.resolve();
  const row = (path: string, ms: number) => [
    `quantize ${rows}x${cols} bf16`,
    path,
    ms.toFixed(2),
    (bf.byteLength / ms / 1e6).toFixed(2),
  ];
  return [
    row("quantizeRowsInt8 (wasm)", fast),
    row("quantizeRowsInt8Reference", ref),
  ];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { shapes: { type: "string" }, threads: { type: "string" } },
  });
  const shapes = values.shapes ? parseShapes(values.shapes) : SHAPES;
  if (values.threads) Deno.env.set("TINYQ_THREADS", values.threads);
  const threads = values.threads ?? String(navigator.hardwareConcurrency);
  const cpu = new CpuBackend("bench");
  await cpu.warm();
  const bw =
    (await wasmPool(cpu.build ?? undefined)?.readBandwidth(cpu.threads)) ??
      NaN;
  const load = (await Deno.readTextFile("/proc/loadavg").catch(() => "? ? ?"))
    .split(" ").slice(0, 3).join(" ");
  console.log(
    `CPU kernels, ${threads} threads, ${cpu.info.reason} (deno ${Deno.version.deno}, ${Deno.build.target}); medians; load ${load}`,
  );
  console.log(
    `read bandwidth (${cpu.threads} threads, 512 MiB, 16-byte loads): ${
      (bw / 1e9).toFixed(1)
    } GB/s; "% bw" = weight GB/s as a share of it (the roofline of decode)`,
  );
  const rows = [[
    "shape",
    "path",
    "ms",
    "GFLOP/s",
    "weight GB/s",
    "% bw",
    "vs f32 Linear",
    "vs W8A16 f16",
  ]];
  for (const shape of shapes) {
    const ms = await measureShape(shape);
    const base = ms[0]!.ms;
    const w8a16 = ms.find((r) => r.path === "W8A16 f16 act")!.ms;
    for (const r of ms) {
      rows.push([
        shapeName(shape),
        r.path,
        r.ms.toFixed(2),
        gflops(shape, r.ms).toFixed(1),
        (r.weightBytes / r.ms / 1e6).toFixed(1),
        `${(100 * r.weightBytes / r.ms / 1e6 / (bw / 1e9)).toFixed(0)}%`,
        (r.ms / base).toFixed(2),
        (r.ms / w8a16).toFixed(2),
      ]);
    }
  }
  console.log(table(rows));
  console.log();
  console.log(
    table([
      ["quantize", "path", "ms", "GB/s of bf16"],
      ...await quantizeRows(4096, 4096),
    ]),
  );
}

if (import.meta.main) {
  await main();
} else {
  // Under `deno bench`: the same paths, one group per shape, the f32 Linear
  // as the baseline so that the summary prints the ratios.
  setBackend("cpu", "bench");
  for (const s of SHAPES) {
    const w = new Tensor(
      new Float32Array(s.n * s.k).map((_, i) => Math.sin(i)),
      [s.n, s.k],
    );
    const x = new Tensor(
      new Float32Array(s.m * s.k).map((_, i) => Math.cos(i)),
      [s.m, s.k],
    );
    const x16 = x.to("f16");
    const linear = Linear.fromTensors(w);
    const w8a32 = new W8A32LinearLayer(s.k, s.n, { bias: false });
    w8a32.quantize(w);
    const w8a16 = new W8A16LinearLayer(s.k, s.n, { bias: false });
    w8a16.quantize(w);
    const w8a8 = new W8A8LinearLayer(s.k, s.n, { bias: false });
    w8a8.quantize(w);
    const w4a16 = new W4A16LinearLayer(s.k, s.n, { bias: false });
    w4a16.quantize(w);
    const group = shapeName(s);
    Deno.bench(`${group} Linear f32`, { group, baseline: true }, async () => {
      await linear.forward(x);
    });
    Deno.bench(`${group} W8A32`, { group }, async () => {
      await w8a32.forward(x);
    });
    Deno.bench(`${group} W8A16 f16`, { group }, async () => {
      await w8a16.forward(x16);
    });
    Deno.bench(`${group} W8A8 f32`, { group }, async () => {
      await w8a8.forward(x);
    });
    Deno.bench(`${group} W4A16 g128 f16`, { group }, async () => {
      await w4a16.forward(x16);
    });
  }
  const rows = 4096, cols = 4096;
  const bf = f32ArrayToBf16(
    new Float32Array(rows * cols).map((_, i) => Math.sin(i)),
  );
  Deno.bench("quantizeRowsInt8 4096x4096 bf16 (32 MiB)", {
    group: "quantize",
    baseline: true,
  }, () => {
    quantizeRowsInt8(bf, "bf16", rows, cols);
  });
}
