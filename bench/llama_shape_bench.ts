/**
 * Issue 16's side-by-side on the 0.71 B Llama shape (hidden 2048, 16 layers,
 * intermediate 5632, 32 / 4 heads, vocab 32000): one token (decode) and a
 * 128-token prompt (prefill) through every Linear of that shape — q, k, v, o,
 * gate, up, down of each layer and the output layer, 770 M weights — for
 * W8A8, W8A16 (f16 activations) and W4A16 (g128, f16), on the CPU backend's
 * default build and threads; next to it, in the same run:
 *
 * - the read bandwidth of the machine as the kernels see it (2 threads,
 *   16-byte loads), and each path's weight GB/s as a share of it;
 * - PyTorch's fp32 `F.linear` on 128 × 4096 × 4096 (bench/torch_linear.py,
 *   `--python`, default /tmp/v/bin/python; skipped when absent) against our
 *   W8A8 and W8A16 on the same shape;
 * - llama.cpp (bench/llama_cpp_bench.mjs through node, when `--gguf` files
 *   and the NODE_LLAMA_CPP entry are given) decode and prefill tok/s.
 *
 *   deno run -A bench/llama_shape_bench.ts [--reps 9] [--gguf a.gguf,b.gguf]
 *       [--python /tmp/v/bin/python] [--kernel wasm|simd128]
 *
 * "first token" is the first decode pass of the process (after
 * `CpuBackend.warm()` and `prepare()` of every weight, as a model loader
 * does): the cold start, against the steady state.
 *
 * Our tok/s count the Linear layers only (attention over a short context,
 * norms and the embedding lookup are a few per cent of a token on this
 * shape); llama.cpp's count everything. Medians; `uptime` load printed.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { CpuBackend } from "../src/backend/cpu.ts";
import type { Int4Weight, Int8Weight } from "../src/backend/backend.ts";
import { wasmPool } from "../src/backend/_cpu_pool.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    reps: { type: "string", default: "9" },
    gguf: { type: "string" },
    python: { type: "string", default: "/tmp/v/bin/python" },
    kernel: { type: "string", default: "wasm" },
    "prefill-reps": { type: "string", default: "3" },
  },
});
const REPS = Number(values.reps), PREFILL_REPS = Number(values["prefill-reps"]);
const HIDDEN = 2048, LAYERS = 16, INTER = 5632, KV = 256, VOCAB = 32000;
const SHAPES: [n: number, k: number][] = [];
for (let l = 0; l < LAYERS; l++) {
  SHAPES.push(
    [HIDDEN, HIDDEN],
    [KV, HIDDEN],
    [KV, HIDDEN],
    [HIDDEN, HIDDEN],
    [INTER, HIDDEN],
    [INTER, HIDDEN],
    [HIDDEN, INTER],
  );
}
SHAPES.push([VOCAB, HIDDEN]);
const WEIGHTS = SHAPES.reduce((s, [n, k]) => s + n * k, 0);

let seed = 12345;
function fillRandom(a: Uint8Array): void {
  const u32 = new Uint32Array(a.buffer, a.byteOffset, a.byteLength >> 2);
  for (let i = 0; i < u32.length; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    u32[i] = seed;
  }
}

const median = (a: number[]) => [...a].sort((p, q) => p - q)[a.length >> 1]!;
const load = async () =>
  (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");

const cpu = new CpuBackend("bench", { kernel: values.kernel as "wasm" });
await cpu.warm();
console.log(
  `${cpu.info.reason}; 0.71 B Llama shape, ${
    (WEIGHTS / 1e6).toFixed(0)
  } M Linear weights; load ${await load()}`,
);

const int8: Int8Weight[] = SHAPES.map(([n, k]) => {
  const q = new Int8Array(n * k);
  fillRandom(new Uint8Array(q.buffer));
  for (let i = 0; i < q.length; i++) if (q[i] === -128) q[i] = -127;
  return {
    q,
    scales: new Float32Array(n).fill(1 / 4096),
    zeroPoints: null,
    n,
    k,
  };
});
const int4: Int4Weight[] = SHAPES.map(([n, k]) => {
  const packed = new Uint8Array(n * k / 2);
  fillRandom(packed);
  return {
    packed,
    scales: new Float32Array(n * k / 128).fill(1 / 512),
    zeroPoints: null,
    n,
    k,
    groupSize: 128,
  };
});
for (const w of [...int8, ...int4]) await cpu.prepare(w);
const int8Bytes = int8.reduce(
  (s, w) => s + w.q.byteLength + w.scales.byteLength,
  0,
);
const int4Bytes = int4.reduce(
  (s, w) => s + w.packed.byteLength + w.scales.byteLength,
  0,
);

const bw =
  (await wasmPool(cpu.build ?? undefined)!.readBandwidth(cpu.threads))! / 1e9;
console.log(
  `read bandwidth (${cpu.threads} threads, 512 MiB, 16-byte loads): ${
    bw.toFixed(1)
  } GB/s`,
);

function activations(m: number, k: number): Float32Array {
  const x = new Float32Array(m * k);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.731 + m) * 2;
  return x;
}

// Activations are made outside the timed region: per shape, once.
const xCache = new Map<string, Float32Array | Float16Array>();
function cached<T extends Float32Array | Float16Array>(
  key: string,
  make: () => T,
): T {
  let v = xCache.get(key);
  if (!v) xCache.set(key, v = make());
  return v as T;
}
const x32 = (m: number, k: number) =>
  cached(`32 ${m} ${k}`, () => activations(m, k));
const x16 = (m: number, k: number) =>
  cached(`16 ${m} ${k}`, () => Float16Array.from(activations(m, k)));

type Path = { name: string; bytes: number; run: (m: number) => Promise<void> };
const paths: Path[] = [
  {
    name: "W8A8",
    bytes: int8Bytes,
    run: async (m) => {
      for (const w of int8) await cpu.linearW8A8(x32(m, w.k), m, w, null);
    },
  },
  {
    name: "W8A16 f16",
    bytes: int8Bytes,
    run: async (m) => {
      for (const w of int8) {
        await cpu.linearInt8(x16(m, w.k), "f16", m, w, null);
      }
    },
  },
  {
    name: "W4A16 g128 f16",
    bytes: int4Bytes,
    run: async (m) => {
      for (const w of int4) {
        await cpu.linearInt4(x16(m, w.k), "f16", m, w, null);
      }
    },
  },
];

const rows: string[][] = [[
  "path",
  "decode ms/token",
  "decode tok/s",
  "weight GB/s",
  "% of read bw",
  "prefill 128 ms",
  "prefill tok/s",
  "first token ms",
  "first / steady",
]];
const ours: Record<string, { decode: number; prefill: number }> = {};
// The first decode pass of each path (the cold start), then the timed
// passes in alternation, so that every path sees the same load.
const firstMs: number[] = [];
for (const p of paths) {
  const f0 = performance.now();
  await p.run(1);
  firstMs.push(performance.now() - f0);
}
const decode: number[][] = paths.map(() => []);
for (let r = 0; r < REPS; r++) {
  for (const [i, p] of paths.entries()) {
    const t0 = performance.now();
    await p.run(1);
    decode[i]!.push(performance.now() - t0);
  }
}
for (const p of paths) await p.run(128);
const prefill: number[][] = paths.map(() => []);
for (let r = 0; r < PREFILL_REPS; r++) {
  for (const [i, p] of paths.entries()) {
    const t0 = performance.now();
    await p.run(128);
    prefill[i]!.push(performance.now() - t0);
  }
}
for (const [i, p] of paths.entries()) {
  const dm = median(decode[i]!), pm = median(prefill[i]!);
  ours[p.name] = { decode: 1000 / dm, prefill: 128000 / pm };
  const gbs = p.bytes / dm / 1e6;
  rows.push([
    p.name,
    dm.toFixed(1),
    (1000 / dm).toFixed(1),
    gbs.toFixed(1),
    `${(100 * gbs / bw).toFixed(0)}%`,
    pm.toFixed(0),
    (128000 / pm).toFixed(0),
    firstMs[i]!.toFixed(1),
    (firstMs[i]! / dm).toFixed(2),
  ]);
}
printTable(rows);

// PyTorch fp32 F.linear on 128 × 4096 × 4096 against ours on that shape.
try {
  const script = new URL("./torch_linear.py", import.meta.url).pathname;
  const out = await new Deno.Command(values.python!, {
    args: [script, "--threads", String(cpu.threads), "128x4096x4096"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  const torchMs =
    JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!)
      .ms;
  const n = 4096, k = 4096, m = 128;
  const q = new Int8Array(n * k);
  fillRandom(new Uint8Array(q.buffer));
  const w: Int8Weight = {
    q,
    scales: new Float32Array(n).fill(1 / 4096),
    zeroPoints: null,
    n,
    k,
  };
  await cpu.prepare(w);
  const x = activations(m, k), xh = Float16Array.from(x);
  const time = async (fn: () => Promise<unknown>) => {
    await fn();
    const t: number[] = [];
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      await fn();
      t.push(performance.now() - t0);
    }
    return median(t);
  };
  const a8 = await time(() => cpu.linearW8A8(x, m, w, null));
  const a16 = await time(() => cpu.linearInt8(xh, "f16", m, w, null));
  const gf = (ms: number) => (2 * m * n * k / ms / 1e6).toFixed(0);
  console.log();
  printTable([
    ["128×4096×4096", "ms", "GFLOP/s", "throughput vs PyTorch fp32"],
    ["PyTorch fp32 F.linear", torchMs.toFixed(1), gf(torchMs), "1.00"],
    ["W8A8 (ours)", a8.toFixed(1), gf(a8), (torchMs / a8).toFixed(2)],
    ["W8A16 f16 (ours)", a16.toFixed(1), gf(a16), (torchMs / a16).toFixed(2)],
  ]);
} catch (e) {
  console.log(
    `PyTorch comparison skipped: ${(e as Error).message.split("\n")[0]}`,
  );
}

// llama.cpp, when asked.
if (values.gguf) {
  const script = new URL("./llama_cpp_bench.mjs", import.meta.url).pathname;
  const out = await new Deno.Command("node", {
    args: [
      script,
      ...values.gguf.split(","),
      "--threads",
      String(cpu.threads),
      "--json",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    console.log(
      `llama.cpp skipped: ${
        new TextDecoder().decode(out.stderr).split("\n")[0]
      }`,
    );
  } else {
    const res = JSON.parse(
      new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!,
    );
    const q8 = res.find((r: { model: string }) => /q8_0/i.test(r.model));
    const q4 = res.find((r: { model: string }) => /q4_0/i.test(r.model));
    console.log();
    const t: string[][] = [["", "decode tok/s", "prefill 128 tok/s"]];
    for (const r of res) {
      t.push([
        `llama.cpp ${r.model}`,
        r.decode_tok_s.toFixed(1),
        r.prefill_tok_s.toFixed(0),
      ]);
    }
    printTable(t);
    const ratio = (a: number, b?: number) => b ? (a / b).toFixed(2) : "-";
    console.log();
    printTable([
      ["ratio (ours / llama.cpp)", "decode", "target", "prefill", "target"],
      [
        "W8A8 / Q8_0",
        ratio(ours["W8A8"]!.decode, q8?.decode_tok_s),
        "≥ 1.2",
        ratio(ours["W8A8"]!.prefill, q8?.prefill_tok_s),
        "≥ 1.0",
      ],
      [
        "W8A16 / Q8_0",
        ratio(ours["W8A16 f16"]!.decode, q8?.decode_tok_s),
        "≥ 1.0",
        ratio(ours["W8A16 f16"]!.prefill, q8?.prefill_tok_s),
        "-",
      ],
      [
        "W4A16 / Q4_0",
        ratio(ours["W4A16 g128 f16"]!.decode, q4?.decode_tok_s),
        "≥ 1.0",
        ratio(ours["W4A16 g128 f16"]!.prefill, q4?.prefill_tok_s),
        "-",
      ],
    ]);
  }
}
console.log(`\nload at the end: ${await load()}`);

function printTable(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) =>
    Math.max(...rows.map((r) => r[i]!.length))
  );
  for (const r of rows) {
    console.log(
      r.map((v, i) => i === 0 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))
        .join("  "),
    );
  }
}
