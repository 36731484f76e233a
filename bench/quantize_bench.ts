/**
 * End-to-end benchmark of `tinyq quantize` (issue 3), the real CLI in a
 * subprocess:
 *
 * 1. Throughput: a generated ~1 GiB bf16 Llama-shaped checkpoint (2 shards,
 *    one 128 MiB tensor) quantized `--runs` times, files in page cache after
 *    an untimed first run; prints the median MB/s of input.
 * 2. Memory: checkpoints of `--rss-sizes` GiB (same shapes, more layers, so
 *    the largest tensor stays 128 MiB) quantized under `/usr/bin/time -v`;
 *    prints each peak RSS against the bound 300 MB + 4 × largest tensor.
 *
 * Run: `deno run -A bench/quantize_bench.ts [--size 1] [--runs 5]
 * [--rss-sizes 0.25,1,4] [--dir /tmp] [--methods w8a16,w4a16]` (sizes in
 * GiB; `--rss-sizes ""` skips part 2; each `--methods` entry is a
 * `--method` value, optionally with flags: `w4a16:-g32:--asymmetric`; the
 * methods' runs alternate, so their medians compare side by side). Needs
 * about 1.7 × the largest size free in `--dir`.
 *
 * Under `deno bench` (`deno task bench`) it only registers a quick in-process
 * bench of a 256 MiB checkpoint; the figures above come from running it.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { quantizeCheckpoint } from "../src/io/quantize_checkpoint.ts";
import {
  freeBytes,
  generate,
  GiB,
  LARGEST_TENSOR,
  median,
  quantizeWithCli,
  type RunResult,
  timeBinary,
} from "./_bench_util.ts";

async function script(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      size: { type: "string", default: "1" },
      runs: { type: "string", default: "5" },
      "rss-sizes": { type: "string", default: "0.25,1,4" },
      dir: { type: "string", default: Deno.env.get("TMPDIR") ?? "/tmp" },
      methods: { type: "string", default: "w8a16" },
    },
    strict: true,
  });
  const methods = values.methods.split(",").map((m) => {
    const [method, ...flags] = m.split(":");
    return { label: m, args: ["--method", method!, ...flags] };
  });
  const size = Number(values.size);
  const runs = Number(values.runs);
  const rssSizes = values["rss-sizes"] === ""
    ? []
    : values["rss-sizes"].split(",").map(Number);
  const biggest = Math.max(size, ...rssSizes);
  const free = await freeBytes(values.dir);
  if (free < biggest * GiB * 1.7) {
    console.error(
      `bench: needs ${(biggest * 1.7).toFixed(1)} GiB free in ${values.dir}, ` +
        `has ${(free / GiB).toFixed(1)} GiB`,
    );
    Deno.exit(1);
  }
  const root = await Deno.makeTempDir({
    dir: values.dir,
    prefix: "tinyq-bench-",
  });
  try {
    console.log(
      `deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} CPUs, ` +
        `load average ${
          (await Deno.readTextFile("/proc/loadavg").catch(() => "?")).split(" ")
            .slice(0, 3).join(" ")
        }\n`,
    );
    const input = join(root, "model");
    const out = join(root, "out");
    const made = await generate(input, size, 2);
    for (const m of methods) {
      await quantizeWithCli(input, out, null, m.args); // page cache, JIT caches
      await Deno.remove(out, { recursive: true });
    }
    const results = methods.map(() => [] as RunResult[]);
    for (let i = 0; i < runs; i++) {
      for (const [k, m] of methods.entries()) {
        results[k]!.push(await quantizeWithCli(input, out, null, m.args));
        await Deno.remove(out, { recursive: true });
      }
    }
    const medians: number[] = [];
    for (const [k, m] of methods.entries()) {
      const mbps = results[k]!.map((r) => r.inputBytes / 1e6 / r.seconds);
      const wall = results[k]!.map((r) => r.inputBytes / 1e6 / r.wall);
      medians.push(median(mbps));
      console.log(
        `\ntinyq quantize --method ${m.args.slice(1).join(" ")}, ${
          (made.bytes / GiB).toFixed(2)
        } GiB bf16, ${runs} runs:`,
      );
      console.log(
        `  runs: ${mbps.map((x) => x.toFixed(0)).join(", ")} MB/s`,
      );
      console.log(
        `  median ${
          median(mbps).toFixed(0)
        } MB/s of input, as the command times it ` +
          `(target >= 400 MB/s)`,
      );
      console.log(
        `  median ${
          median(wall).toFixed(0)
        } MB/s with process start-up (deno run)`,
      );
    }
    for (let k = 1; k < methods.length; k++) {
      console.log(
        `${methods[k]!.label} / ${methods[0]!.label}: ${
          (medians[k]! / medians[0]!).toFixed(2)
        }× the speed (medians of alternating runs)`,
      );
    }
    await Deno.remove(input, { recursive: true });

    if (rssSizes.length > 0) {
      const timeBin = await timeBinary();
      const bound = 300e6 + 4 * LARGEST_TENSOR;
      if (!timeBin) {
        console.log("\nmemory: skipped (no /usr/bin/time)");
      } else {
        console.log(
          `\npeak RSS (/usr/bin/time -v), largest tensor 128 MiB, bound 300 MB + ` +
            `4 × 128 MiB = ${(bound / 1e6).toFixed(0)} MB:`,
        );
        for (const gib of rssSizes) {
          const dir = join(root, `model-${gib}`);
          const m = await generate(dir, gib, Math.max(1, Math.round(gib)));
          const r = await quantizeWithCli(dir, out, timeBin);
          await Deno.remove(out, { recursive: true });
          console.log(
            `  ${(m.bytes / GiB).toFixed(2).padStart(5)} GiB: peak RSS ` +
              `${(r.rssBytes! / 1e6).toFixed(0).padStart(4)} MB ` +
              `(${r.rssBytes! <= bound ? "within" : "OVER"} the bound), ` +
              `${(r.inputBytes / 1e6 / r.seconds).toFixed(0)} MB/s`,
          );
          await Deno.remove(dir, { recursive: true });
        }
      }
    }
  } finally {
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  await script();
} else {
  const dir = await Deno.makeTempDir({ prefix: "tinyq-bench-" });
  globalThis.addEventListener(
    "unload",
    () => Deno.removeSync(dir, { recursive: true }),
  );
  const made = await generate(join(dir, "model"), 0.25, 1);
  Deno.bench({
    name: `quantizeCheckpoint() in-process, ${
      (made.bytes / 2 ** 20).toFixed(0)
    } MiB bf16 (MB/s = size / time)`,
    n: 5,
    warmup: 1,
    async fn(b) {
      await Deno.remove(join(dir, "out"), { recursive: true }).catch(() => {});
      b.start();
      await quantizeCheckpoint(join(dir, "model"), join(dir, "out"));
      b.end();
    },
  });
}
