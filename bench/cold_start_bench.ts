/**
 * Cold start of the CPU kernels (issue 16): in fresh processes, the first
 * call of a 1×4096×4096 layer (W8A32, W8A16 f16, W8A8, W4A16) against the
 * steady state (median of the 15 calls after it), on all threads, with the
 * weight's copy made beforehand by `CpuBackend.prepare` (what a model loader
 * does) — and the same with the copy made by the first call, to show what
 * the copy itself costs. Medians over `--runs` processes (default 5).
 *
 *   deno run -A bench/cold_start_bench.ts [--runs 5] [--no-warm]
 *
 * `--no-warm` skips `await cpu.warm()` (the constructor still starts it in
 * the background) to show what the warm-up is for.
 *
 * @module
 */

import { parseArgs } from "node:util";

const CHILD = `
import { CpuBackend } from "${
  new URL("../src/backend/cpu.ts", import.meta.url).href
}";
import { quantizeInt4 } from "${
  new URL("../src/quant/int4.ts", import.meta.url).href
}";
const [path, mode] = Deno.args;
const N = 4096, K = 4096;
const cpu = new CpuBackend("cold start");
if (mode.includes("warm")) await cpu.warm();
const w = new Float32Array(N * K).map((_, i) => Math.sin(i * 0.37));
const q = new Int8Array(N * K).map((_, i) => (i * 7919) % 255 - 127);
const w8 = { q, scales: new Float32Array(N).fill(0.01), zeroPoints: null, n: N, k: K };
const w4 = quantizeInt4(w, "f32", N, K, { groupSize: 128 });
const x = new Float32Array(K).map((_, i) => Math.cos(i));
const xh = Float16Array.from(x);
const f = {
  "W8A32": () => cpu.linearInt8(x, "f32", 1, w8, null),
  "W8A16 f16": () => cpu.linearInt8(xh, "f16", 1, w8, null),
  "W8A8": () => cpu.linearW8A8(x, 1, w8, null),
  "W4A16 g128": () => cpu.linearInt4(xh, "f16", 1, w4, null),
}[path];
if (mode.includes("prepare")) await cpu.prepare(path === "W4A16 g128" ? w4 : w8);
let t = performance.now();
await f();
const first = performance.now() - t;
const rest = [];
for (let i = 0; i < 15; i++) { t = performance.now(); await f(); rest.push(performance.now() - t); }
rest.sort((a, b) => a - b);
console.log(JSON.stringify({ first, steady: rest[7] }));
`;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "5" },
    "no-warm": { type: "boolean" },
  },
});
const runs = Number(values.runs);
const script = await Deno.makeTempFile({ suffix: ".ts" });
await Deno.writeTextFile(script, CHILD);
const median = (a: number[]) => [...a].sort((p, q) => p - q)[a.length >> 1]!;
const load =
  (await Deno.readTextFile("/proc/loadavg").catch(() => "?")).split(" ")[0];
console.log(
  `cold start, fresh process per run, median of ${runs} runs, ${navigator.hardwareConcurrency} threads, load ${load}`,
);
console.log(
  "path          copy made by      first ms  steady ms  first/steady",
);
try {
  for (const path of ["W8A32", "W8A16 f16", "W8A8", "W4A16 g128"]) {
    for (const copy of ["prepare", "first call"]) {
      const mode = (values["no-warm"] ? "" : "warm,") +
        (copy === "prepare" ? "prepare" : "");
      const firsts: number[] = [], steadies: number[] = [];
      for (let r = 0; r < runs; r++) {
        const out = await new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", script, path, mode],
          stdout: "piped",
          stderr: "inherit",
        }).output();
        const res = JSON.parse(new TextDecoder().decode(out.stdout));
        firsts.push(res.first);
        steadies.push(res.steady);
      }
      const a = median(firsts), b = median(steadies);
      console.log(
        `${path.padEnd(13)} ${copy.padEnd(16)} ${a.toFixed(2).padStart(9)} ${
          b.toFixed(2).padStart(10)
        } ${(a / b).toFixed(2).padStart(13)}`,
      );
    }
  }
} finally {
  await Deno.remove(script);
}
