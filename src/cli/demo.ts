/**
 * `tinyq demo`: the whole job on a built-in model — make a small Llama-shaped
 * bf16 checkpoint, quantize it, evaluate the result, clean up.
 *
 * @module
 */

import { join } from "node:path";
import { makeDemoCheckpoint } from "../demo/demo_checkpoint.ts";
import { quantizeCheckpoint } from "../io/checkpoint.ts";
import { registerTemp } from "../io/_atomic.ts";
import { flag, parseCommandArgs, str } from "./_args.ts";
import { type CliIO, UsageError } from "./_io.ts";
import { applyBackend, evaluateCheckpoints, formatEval } from "./eval.ts";
import { ProgressBar } from "./progress.ts";
import { formatQuantizeSummary } from "./quantize.ts";
import { humanBytes } from "./tables.ts";

/** `tinyq demo --help`. */
export const DEMO_HELP = `Usage: tinyq demo [options]

Generates a small Llama-shaped bf16 checkpoint (4 layers, 2 shards, a few MB,
the same bytes every time) in a temporary folder, quantizes it (lm_head
excluded), prints the summary and the eval table with the backend used and
why, and removes the folder.

Options:
  -m, --method <m>   w8a16 (default) or w8a32
      --backend <b>  auto (default), cpu or webgpu
  -v, --verbose      stack traces on errors
  -h, --help         show this help
`;

/** Runs `tinyq demo`; returns the exit code. */
export async function demoCommand(
  args: readonly string[],
  io: CliIO,
): Promise<number> {
  const p = parseCommandArgs("demo", args, {
    method: { type: "string", short: "m" },
    backend: { type: "string" },
    verbose: { type: "boolean", short: "v" },
  }, { min: 0, max: 0, names: "" });
  if (flag(p, "help")) {
    io.out(DEMO_HELP);
    return 0;
  }
  const method = (str(p, "method") ?? "w8a16").toLowerCase();
  if (method !== "w8a16" && method !== "w8a32") {
    throw new UsageError(
      "demo",
      `unknown --method "${str(p, "method")}"; expected w8a16 or w8a32`,
    );
  }
  applyBackend("demo", str(p, "backend"));
  const dir = await Deno.makeTempDir({ prefix: "tinyq-demo-" });
  const unregister = registerTemp(dir);
  try {
    const model = join(dir, "tiny-llama");
    const out = join(dir, "tiny-llama-int8");
    const made = await makeDemoCheckpoint(model);
    io.out(
      `demo: generated ${model} (${made.tensors.length} tensors, ${
        humanBytes(made.bytes)
      }, ${made.shards.length} shards)\n\n`,
    );
    const bar = new ProgressBar(io, "quantize");
    let result;
    try {
      result = await quantizeCheckpoint(model, out, {
        method,
        exclude: ["lm_head"],
        onProgress: (s) => bar.update(s),
      });
    } finally {
      bar.done();
    }
    io.out(formatQuantizeSummary(result) + "\n");
    const report = await evaluateCheckpoints(model, out);
    io.out(formatEval(report));
    return report.verdict === "fail" ? 1 : 0;
  } finally {
    unregister();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
