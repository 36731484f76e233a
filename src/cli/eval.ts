/**
 * `tinyq eval`: how far a quantized checkpoint is from its original, layer by
 * layer — the weights themselves, and the output of `forward` on seeded
 * random inputs (float `Linear` vs the quantized layer) — plus a check that
 * every other tensor came through byte for byte.
 *
 * @module
 */

import { memberName, moduleLabel } from "../member_name.ts";
import {
  type BackendChoice,
  getBackend,
  parseBackendChoice,
  setBackend,
} from "../backend/select.ts";
import { isFloatDType } from "../dtype.ts";
import { Checkpoint, CheckpointError } from "../io/checkpoint.ts";
import { Linear } from "../linear.ts";
import { Tensor } from "../tensor.ts";
import { seededNormals } from "../demo/demo_checkpoint.ts";
import { flag, list, parseCommandArgs, str } from "./_args.ts";
import { warnUnmatchedExcludes } from "./_exclude.ts";
import { type CliIO, UsageError } from "./_io.ts";
import { type ErrorStats, errorStats, formatDb } from "./_error_stats.ts";
import {
  compareSchemes,
  DEFAULT_SCHEMES,
  formatSchemes,
  parseScheme,
} from "./eval_schemes.ts";
import { withProgress } from "./progress.ts";
import { formatTableFit, shape, wrapText } from "./tables.ts";
import type { ProgressState } from "./progress.ts";
import { compareFloatCheckpoints, formatFloatCompare } from "./eval_float.ts";

/** `tinyq eval --help`. */
export const EVAL_HELP = `Usage: tinyq eval <original> <quantized> [options]
       tinyq eval <original> [--schemes <list>] [options]

With two checkpoints: compares a quantized checkpoint (any method) with the
float one it came from. For each quantized Linear: the weight error (max
|error|, RMSE, SNR in dB, cosine) of the dequantized weight against the
original, and the error of forward() on seeded random inputs (float Linear vs
the quantized layer, on the chosen backend). Also checks that every other
tensor is byte-identical. Ends with a verdict: PASS (output SNR >= 30 dB
everywhere; 15 dB for 4-bit weights), WARN (>= 20 dB; 10 dB for 4-bit),
FAIL (worse, or a tensor changed); exit status 1 on FAIL.

With two float checkpoints (neither quantized): compares them tensor by
tensor, the second against the first: byte-identical tensors counted, the
others with max |difference|, SNR and cosine, and the names in only one.
Verdict IDENTICAL, CLOSE (every difference >= 30 dB SNR) or DIFFER (exit 1).

With one checkpoint: quantizes it in memory under each scheme (nothing is
written; each weight is read once) and prints one row per scheme: bits per
weight, checkpoint size, weight SNR (mean and worst layer), largest weight
error, output error ||y_q - y|| / ||y|| and cosine: a table to choose from.

Options:
      --schemes <list>  comma-separated schemes to compare (one checkpoint):
                        w8a32, w8a16, w8a8, w4a16 with -g32/-g64/-g128 (w4a16)
                        and -asym, e.g. w8a16,w8a8,w4a16-g32-asym (default:
                        ${DEFAULT_SCHEMES.join(",")})
  -x, --exclude <name>  leave a Linear out of the comparison (one checkpoint);
                        repeatable
      --backend <b>   auto (default), cpu or webgpu (also TINYQ_BACKEND)
      --tokens <n>    rows of random input per layer (default 8)
      --seed <n>      seed of the random inputs (default 0)
      --json          print the report as JSON on stdout
  -v, --verbose       stack traces on errors
  -h, --help          show this help
`;

export { type ErrorStats, errorStats } from "./_error_stats.ts";

/** The comparison of one quantized layer. */
export interface LayerEval {
  /** Dotted module path. */
  path: string;
  /** [out, in]. */
  shape: [number, number];
  /** Dequantized weight vs original weight. */
  weight: ErrorStats;
  /** Quantized forward vs float forward. */
  output: ErrorStats;
}

/** What {@linkcode evaluateCheckpoints} found. */
export interface EvalReport {
  /** Original checkpoint path. */
  original: string;
  /** Quantized checkpoint path. */
  quantized: string;
  /** Recorded method. */
  method: string;
  /** The backend forward ran on, and why. */
  backend: { name: string; reason: string };
  /** Per-layer figures. */
  layers: LayerEval[];
  /** Pass-through tensors that are byte-identical. */
  identical: number;
  /** Pass-through tensors that differ or are missing, with why. */
  changed: string[];
  /** `pass`, `warn` or `fail`. */
  verdict: "pass" | "warn" | "fail";
  /** The verdict in one line. */
  verdictLine: string;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Options of {@linkcode evaluateCheckpoints}. */
export interface EvalOptions {
  /** Rows of random input per layer (default 8). */
  tokens?: number;
  /** Seed (default 0). */
  seed?: number;
  /** Called after each layer (for a progress bar). */
  onProgress?: (p: ProgressState) => void;
}

/**
 * Compares the quantized checkpoint at `quantizedPath` with the original at
 * `originalPath`, one layer at a time.
 */
export async function evaluateCheckpoints(
  originalPath: string,
  quantizedPath: string,
  options: EvalOptions = {},
): Promise<EvalReport> {
  const tokens = options.tokens ?? 8;
  const seed = options.seed ?? 0;
  using orig = await Checkpoint.open(originalPath);
  using quant = await Checkpoint.open(quantizedPath);
  const q = quant.quantization;
  const format = quant.format;
  if (!q || !format) {
    throw new CheckpointError(
      quantizedPath,
      "is not a TinyQ-quantized checkpoint (no quantization metadata)",
    );
  }
  if (orig.quantization) {
    throw new CheckpointError(
      originalPath,
      "is itself quantized; give the float original first",
    );
  }
  const info = await getBackend();
  const backend = { name: info.name as string, reason: info.reason };
  const transposed = new Set(q.transposed);
  const stored = new Set<string>();
  const layers: LayerEval[] = [];
  let index = 0;
  const weightBytes = (p: string) =>
    orig.entry(`${p}.weight`)?.info.byteLength ?? 0;
  const bytesTotal = q.modules.reduce((s, p) => s + weightBytes(p), 0);
  let bytesDone = 0;
  for (const path of q.modules) {
    for (const n of format.storedNames(path)) stored.add(n);
    const wName = memberName(path, "weight");
    const we = orig.entry(wName);
    if (!we) {
      throw new CheckpointError(
        originalPath,
        `has no "${wName}", which the quantized checkpoint quantized; are they the same model?`,
      );
    }
    const layer = await quant.quantizedLayer(path);
    const stored2 = await orig.read(wName);
    const [a, b] = stored2.shape as [number, number];
    const t = transposed.has(path);
    const [out, inF] = t ? [b, a] : [a, b];
    if (out !== layer.outFeatures || inF !== layer.inFeatures) {
      throw new CheckpointError(
        quantizedPath,
        `is [${layer.outFeatures}, ${layer.inFeatures}] but the original weight is ${
          shape(stored2.shape)
        }${t ? " (Conv1D)" : ""}`,
        format.storedNames(path).find((n) => quant.entry(n)) ?? path,
      );
    }
    if (!isFloatDType(stored2.dtype)) {
      throw new CheckpointError(
        originalPath,
        `is ${stored2.dtype}, not a float weight`,
        wName,
      );
    }
    let w = stored2.toF32Array();
    if (t) {
      const tr = new Float32Array(w.length);
      for (let r = 0; r < a; r++) {
        for (let c = 0; c < b; c++) tr[c * a + r] = w[r * b + c]!;
      }
      w = tr;
    }
    const weight = errorStats(w, layer.dequantize().toF32Array());

    const float = Linear.fromTensors(new Tensor(w, [out, inF]), layer.bias);
    const xDtype = q.method === "w8a32" || q.method === "w8a8"
      ? "f32"
      : stored2.dtype === "f16"
      ? "f16"
      : "bf16";
    const x = new Tensor(
      seededNormals(seed * 7919 + index++)(new Float32Array(tokens * inF)),
      [tokens, inF],
    ).to(xDtype);
    const ref = await float.forward(x.to("f32"));
    const got = await layer.forward(x);
    layer.dispose();
    float.dispose();
    layers.push({
      path,
      shape: [out, inF],
      weight,
      output: errorStats(ref.toF32Array(), got.toF32Array()),
    });
    bytesDone += weightBytes(path);
    options.onProgress?.({
      bytesDone,
      bytesTotal,
      layersDone: layers.length,
      layersTotal: q.modules.length,
    });
  }
  let identical = 0;
  const changed: string[] = [];
  for (const e of quant.entries) {
    if (stored.has(e.name)) continue;
    const o = orig.entry(e.name);
    if (!o) {
      changed.push(`${e.name} (not in the original)`);
      continue;
    }
    const [x, y] = [
      await orig.file(o.shard).readBytes(e.name),
      await quant.file(e.shard).readBytes(e.name),
    ];
    if (
      o.info.dtype !== e.info.dtype ||
      o.info.shape.join() !== e.info.shape.join() || !sameBytes(x, y)
    ) {
      changed.push(`${e.name} (bytes differ)`);
    } else identical++;
  }
  const excluded = new Set(q.excluded);
  for (const l of orig.linears()) {
    if (
      !q.modules.includes(l.path) && !excluded.has(l.path) &&
      !quant.entry(memberName(l.path, "weight"))
    ) {
      changed.push(
        `${
          memberName(l.path, "weight")
        } (missing from the quantized checkpoint)`,
      );
    }
  }
  let worst: LayerEval | null = null;
  for (const l of layers) {
    if (!worst || !(l.output.snrDb >= worst.output.snrDb)) worst = l;
  }
  const worstDb = worst?.output.snrDb ?? Infinity;
  // Each bit fewer costs about 6 dB: 4-bit weights are held to what int4
  // groups give (about 19–21 dB on Gaussian weights), not to int8's 40 dB.
  const [passDb, warnDb] = q.bits === 4 ? [15, 10] : [30, 20];
  const verdict = changed.length > 0 || !(worstDb >= warnDb)
    ? "fail"
    : worstDb >= passDb
    ? "pass"
    : "warn";
  const where = worst
    ? `worst output SNR ${worstDb.toFixed(1)} dB (${moduleLabel(worst.path)})`
    : "no quantized layers";
  const verdictLine = verdict === "fail" && changed.length > 0
    ? `FAIL: ${changed.length} tensor(s) that should pass through unchanged differ: ${
      changed.slice(0, 3).join(", ")
    }`
    : `${verdict.toUpperCase()}: ${layers.length} layers, ${where}; ${identical} other tensors byte-identical` +
      (verdict === "pass"
        ? ` — ${
          q.bits === 4 ? "int4 group-wise" : "int8 per-channel"
        } error as expected`
        : verdict === "warn"
        ? " — noticeable error, consider --exclude for that layer"
        : " — the quantized outputs are far from the float ones");
  return {
    original: originalPath,
    quantized: quantizedPath,
    method: q.method,
    backend,
    layers,
    identical,
    changed,
    verdict,
    verdictLine,
  };
}

/**
 * The report as a table plus the verdict line, at most `width` columns wide
 * (layer names lose their start first; RMSE and cos(W) are in `--json`).
 */
export function formatEval(r: EvalReport, width = 80): string {
  const table = formatTableFit(
    ["layer", "shape", "max|dW|", "SNR(W) dB", "SNR(y) dB", "cos(y)"],
    r.layers.map((l) => [
      moduleLabel(l.path),
      shape(l.shape),
      l.weight.maxAbs.toExponential(2),
      formatDb(l.weight.snrDb),
      formatDb(l.output.snrDb),
      l.output.cosine.toFixed(6),
    ]),
    ["left", "left", "right", "right", "right", "right"],
    width,
  );
  return wrapText(
    `eval: ${r.quantized} (${r.method}) against ${r.original}`,
    width,
  ) + "\n" +
    wrapText(`backend: ${r.backend.name} (${r.backend.reason})`, width) +
    "\n\n" + table +
    (r.changed.length
      ? `\nchanged:\n${r.changed.map((c) => `  ${c}\n`).join("")}`
      : "") +
    `\n${wrapText(`verdict: ${r.verdictLine}`, width)}\n`;
}

async function isQuantized(path: string): Promise<boolean> {
  using c = await Checkpoint.open(path);
  return c.quantization !== null || c.alreadyQuantized() !== null;
}

/** Applies `--backend`, or leaves the environment's choice. */
export function applyBackend(command: string, text: string | undefined): void {
  if (text === undefined) return;
  let choice: BackendChoice;
  try {
    choice = parseBackendChoice(text, "--backend");
  } catch (e) {
    throw new UsageError(command, (e as Error).message);
  }
  setBackend(choice, `--backend ${choice}`);
}

function intFlag(
  command: string,
  name: string,
  text: string | undefined,
  min: number,
): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min) {
    throw new UsageError(
      command,
      `--${name} must be an integer >= ${min}, got "${text}"`,
    );
  }
  return n;
}

/** Runs `tinyq eval`; returns the exit code (1 on a FAIL verdict). */
export async function evalCommand(
  args: readonly string[],
  io: CliIO,
): Promise<number> {
  const p = parseCommandArgs("eval", args, {
    schemes: { type: "string" },
    exclude: { type: "string", short: "x", multiple: true },
    backend: { type: "string" },
    tokens: { type: "string" },
    seed: { type: "string" },
    json: { type: "boolean" },
  }, {
    min: 1,
    max: 2,
    names: "<original> checkpoint (and a <quantized> one to compare with it)",
  });
  if (flag(p, "help")) {
    io.out(EVAL_HELP);
    return 0;
  }
  const schemesText = str(p, "schemes");
  const exclude = list(p, "exclude");
  if (
    p.positionals.length === 2 && (schemesText !== undefined || exclude.length)
  ) {
    throw new UsageError(
      "eval",
      `--${
        schemesText !== undefined ? "schemes" : "exclude"
      } compares schemes on one checkpoint; give only <original>`,
    );
  }
  let schemes: string[] | undefined;
  try {
    schemes = schemesText?.split(",").map((s) => parseScheme(s).name);
  } catch (e) {
    throw new UsageError("eval", (e as Error).message);
  }
  if (schemes?.length === 0 || schemes?.some((s) => s === "")) {
    throw new UsageError("eval", "--schemes needs a comma-separated list");
  }
  if (exclude.some((x) => x === "")) {
    throw new UsageError("eval", "--exclude needs a module name or glob");
  }
  applyBackend("eval", str(p, "backend"));
  const tokens = intFlag("eval", "tokens", str(p, "tokens"), 1);
  const seed = intFlag("eval", "seed", str(p, "seed"), 0);
  if (p.positionals.length === 1) {
    if (exclude.length > 0) {
      using ckpt = await Checkpoint.open(p.positionals[0]!);
      warnUnmatchedExcludes(io, exclude, ckpt.linears().map((l) => l.path));
    }
    const report = await withProgress(
      io,
      "eval",
      (bar) =>
        compareSchemes(p.positionals[0]!, {
          schemes: schemes ?? DEFAULT_SCHEMES,
          exclude,
          ...(tokens !== undefined ? { tokens } : {}),
          ...(seed !== undefined ? { seed } : {}),
          onProgress: (s) => bar.update(s),
        }),
    );
    io.out(
      flag(p, "json")
        ? JSON.stringify(report, (_k, v) => v === Infinity ? "inf" : v, 2) +
          "\n"
        : formatSchemes(report, Math.max(60, io.columns())),
    );
    return 0;
  }
  const [a, b] = [p.positionals[0]!, p.positionals[1]!];
  const json = (x: unknown) =>
    JSON.stringify(x, (_k, v) => v === Infinity ? "inf" : v, 2) + "\n";
  const width = Math.max(60, io.columns());
  if (!(await isQuantized(a)) && !(await isQuantized(b))) {
    const f = await withProgress(
      io,
      "compare",
      (bar) => compareFloatCheckpoints(a, b, (s) => bar.update(s)),
    );
    io.out(flag(p, "json") ? json(f) : formatFloatCompare(f, width));
    return f.verdict === "differ" ? 1 : 0;
  }
  const r = await withProgress(
    io,
    "eval",
    (bar) =>
      evaluateCheckpoints(a, b, {
        ...(tokens !== undefined ? { tokens } : {}),
        ...(seed !== undefined ? { seed } : {}),
        onProgress: (s) => bar.update(s),
      }),
  );
  io.out(flag(p, "json") ? json(r) : formatEval(r, width));
  return r.verdict === "fail" ? 1 : 0;
}
