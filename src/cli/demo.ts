/**
 * `tinyq demo`: the whole job on a built-in model — make a small Llama-shaped
 * bf16 checkpoint, quantize it, evaluate the result, clean up.
 *
 * @module
 */

import { join } from "node:path";
import { makeDemoCheckpoint } from "../demo/demo_checkpoint.ts";
import { quantizeCheckpoint } from "../io/quantize_checkpoint.ts";
import { withScratchDir } from "../io/_scratch.ts";
import { flag, parseCommandArgs, str } from "./_args.ts";
import type { CliIO } from "./_io.ts";
import { applyBackend, evaluateCheckpoints, formatEval } from "./eval.ts";
import {
  compareSchemes,
  DEFAULT_SCHEMES,
  formatSchemes,
} from "./eval_schemes.ts";
import { parseMethodFlags } from "./_method.ts";
import { withProgress } from "./progress.ts";
import { formatQuantizeSummary } from "./quantize.ts";
import { humanBytes } from "./tables.ts";

/** `tinyq demo --help`. */
export const DEMO_HELP = `Usage: tinyq demo [options]

Generates a small Llama-shaped bf16 checkpoint (4 layers, 2 shards, a few MB,
the same bytes every time) in a temporary folder, quantizes it (lm_head
excluded), prints the summary and the eval table with the backend used and
why, then 'tinyq eval <model>': every scheme side by side (bits per weight,
size, weight SNR, output error), and removes the folder.

Options:
  -m, --method <m>      w8a16 (default), w8a32, w8a8 or w4a16
  -g, --group-size <n>  inputs per 4-bit group, w4a16 only (32, 64, 128)
      --asymmetric      zero points (per row for int8, per group for int4)
      --backend <b>     auto (default), cpu or webgpu
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
    "group-size": { type: "string", short: "g" },
    asymmetric: { type: "boolean" },
    backend: { type: "string" },
  }, { min: 0, max: 0, names: "" });
  if (flag(p, "help")) {
    io.out(DEMO_HELP);
    return 0;
  }
  const { method, groupSize } = parseMethodFlags(
    "demo",
    str(p, "method"),
    str(p, "group-size"),
  );
  applyBackend("demo", str(p, "backend"));
  // The scratch folder goes when the demo ends, also on a signal.
  return await withScratchDir("demo", async (dir) => {
    const model = join(dir, "tiny-llama");
    const out = join(dir, "tiny-llama-int8");
    // Llama's own MLP rounding (8/3 · hidden, up to a multiple of 256), so
    // every layer splits into 4-bit groups of 32, 64 or 128.
    const made = await makeDemoCheckpoint(model, { intermediate: 768 });
    io.out(
      `demo: generated ${model} (${made.tensors.length} tensors, ${
        humanBytes(made.bytes)
      }, ${made.shards.length} shards)\n\n`,
    );
    const result = await withProgress(
      io,
      "quantize",
      (bar) =>
        quantizeCheckpoint(model, out, {
          method,
          ...(groupSize !== undefined ? { groupSize } : {}),
          asymmetric: flag(p, "asymmetric"),
          exclude: ["lm_head"],
          onProgress: (s) => bar.update(s),
        }),
    );
    io.out(formatQuantizeSummary(result) + "\n");
    const report = await evaluateCheckpoints(model, out);
    io.out(formatEval(report));
    // The scheme just used is one row of the comparison.
    const used = `${method}${
      result.scheme.groupSize !== null ? `-g${result.scheme.groupSize}` : ""
    }${result.scheme.symmetric ? "" : "-asym"}`;
    io.out(
      `\nevery scheme on this model, as 'tinyq eval <model>' prints it ` +
        `(the ${used} above is one row):\n\n`,
    );
    const schemes = DEFAULT_SCHEMES.includes(used)
      ? DEFAULT_SCHEMES
      : [...DEFAULT_SCHEMES, used];
    io.out(
      formatSchemes(
        await compareSchemes(model, { schemes, exclude: ["lm_head"] }),
      ),
    );
    return report.verdict === "fail" ? 1 : 0;
  }, (line) => io.err(`tinyq: note: ${line}\n`));
}
