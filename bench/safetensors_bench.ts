/**
 * Throughput of the safetensors reader and writer on a file in page cache,
 * beside Deno's own whole-file calls on the same bytes. `readInto()` into one
 * reused buffer is the read path without the first-touch page faults of a
 * fresh buffer per tensor, which bound `readBytes()` and `read()`.
 *
 * The file is Llama-like: one 128 MiB bf16 embedding, eight 16 MiB bf16
 * projections and 32 small norms (~256 MiB in all).
 *
 * Run: `deno run -A bench/safetensors_bench.ts [--runs 5] [--scale 1]
 * [--dir /tmp]` prints the median MB/s (10^6 bytes per second) of each path;
 * `--scale 0.25` makes every tensor a quarter of the size. Under
 * `deno bench -A bench/safetensors_bench.ts` the main paths run as benches
 * on a quarter-size file.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  SafetensorsFile,
  type TensorEntry,
  writeSafetensors,
} from "../src/io/safetensors.ts";

const MiB = 2 ** 20;

const args = parseArgs({
  args: import.meta.main ? Deno.args : [],
  options: {
    runs: { type: "string", default: "5" },
    scale: { type: "string", default: "1" },
    dir: { type: "string" },
  },
});
const RUNS = Math.max(1, Number(args.values.runs));
const SCALE = Number(args.values.scale);

/** The tensors of the bench file, each filled with a cheap pattern once. */
function makeEntries(scale: number): TensorEntry[] {
  const rows = (n: number) => Math.max(1, Math.round(n * scale));
  const shapes: [string, number[]][] = [
    ["model.embed_tokens.weight", [rows(32768), 2048]],
  ];
  for (let i = 0; i < 8; i++) {
    shapes.push([`model.layers.${i}.mlp.up_proj.weight`, [rows(4096), 2048]]);
  }
  for (let i = 0; i < 32; i++) {
    shapes.push([`model.layers.${i % 8}.norm_${i}.weight`, [2048]]);
  }
  return shapes.map(([name, shape]) => {
    const byteLength = shape.reduce((a, b) => a * b, 1) * 2;
    const data = new Uint8Array(byteLength);
    // Not all zeros, so no layer below can special-case it.
    new Uint32Array(data.buffer).fill(0x3f803f80 ^ byteLength);
    return { name, dtype: "bf16", shape, byteLength, bytes: () => data };
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function readAllBytes(path: string): Promise<number> {
  using file = await SafetensorsFile.open(path);
  let n = 0;
  for (const t of file.tensors) n += (await file.readBytes(t.name)).byteLength;
  return n;
}

async function readAllInto(
  path: string,
  scratch: Uint8Array,
): Promise<number> {
  using file = await SafetensorsFile.open(path);
  let n = 0;
  for (const t of file.tensors) {
    n += (await file.readInto(t.name, scratch)).byteLength;
  }
  return n;
}

async function readAllTensors(path: string): Promise<number> {
  using file = await SafetensorsFile.open(path);
  let n = 0;
  for (const t of file.tensors) n += (await file.read(t.name)).byteLength;
  return n;
}

async function main(): Promise<void> {
  const dir = await Deno.makeTempDir({
    dir: args.values.dir,
    prefix: "tinyq_st_bench_",
  });
  try {
    const entries = makeEntries(SCALE);
    const path = `${dir}/bench.safetensors`;
    const rawPath = `${dir}/raw.bin`;
    await writeSafetensors(path, entries);
    const size = (await Deno.stat(path)).size;
    const whole = await Deno.readFile(path);
    const dataBytes = entries.reduce((s, e) => s + e.byteLength, 0);
    const scratch = new Uint8Array(
      Math.max(...entries.map((e) => e.byteLength)),
    ).fill(1); // touched once, as a reused buffer would be

    const paths: [string, () => Promise<unknown>, number][] = [
      [
        "write  writeSafetensors()",
        () => writeSafetensors(path, entries),
        size,
      ],
      [
        "write  Deno.writeFile(), same bytes",
        () => Deno.writeFile(rawPath, whole),
        size,
      ],
      ["read   open() + readBytes() each", () => readAllBytes(path), dataBytes],
      [
        "read   open() + read() each (Tensor)",
        () => readAllTensors(path),
        dataBytes,
      ],
      [
        "read   open() + readInto() one buffer",
        () => readAllInto(path, scratch),
        dataBytes,
      ],
      ["read   Deno.readFile(), whole file", () => Deno.readFile(path), size],
    ];
    const times = paths.map(() => [] as number[]);
    await readAllBytes(path); // warm the page cache and the JIT
    for (let r = 0; r < RUNS; r++) {
      // Interleaved, so a noisy neighbour slows every path alike.
      for (const [i, [, run]] of paths.entries()) {
        const t0 = performance.now();
        await run();
        times[i]!.push(performance.now() - t0);
      }
    }
    const largest = Math.max(...entries.map((e) => e.byteLength));
    console.log(
      `safetensors bench: ${(size / MiB).toFixed(1)} MiB file, ` +
        `${entries.length} tensors (largest ${
          (largest / MiB).toFixed(0)
        } MiB), ` +
        `page cache, median of ${RUNS} runs, MB/s = 10^6 bytes/s`,
    );
    for (const [i, [label, , bytes]] of paths.entries()) {
      const ms = median(times[i]!);
      const mbps = bytes / 1e6 / (ms / 1000);
      console.log(
        `  ${label.padEnd(40)} ${mbps.toFixed(0).padStart(6)} MB/s  ` +
          `(${ms.toFixed(1)} ms)`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  await main();
} else {
  // `deno bench`: a quarter-size file keeps the run short.
  const dir = await Deno.makeTempDir({ prefix: "tinyq_st_bench_" });
  const entries = makeEntries(0.25);
  const path = `${dir}/bench.safetensors`;
  await writeSafetensors(path, entries);
  globalThis.addEventListener("unload", () => {
    Deno.removeSync(dir, { recursive: true });
  });
  const size = (await Deno.stat(path)).size;
  const group = `safetensors ${(size / MiB).toFixed(0)} MiB`;
  Deno.bench({
    name: "writeSafetensors()",
    group,
    n: 10,
    warmup: 2,
    // An async function, so `deno bench` awaits it.
    fn: async () => {
      await writeSafetensors(path, entries);
    },
  });
  Deno.bench({
    name: "open() + readBytes() each",
    group,
    baseline: true,
    n: 10,
    warmup: 2,
    fn: async () => {
      await readAllBytes(path);
    },
  });
  Deno.bench({
    name: "Deno.readFile() whole file",
    group,
    n: 10,
    warmup: 2,
    fn: async () => {
      await Deno.readFile(path);
    },
  });
}
