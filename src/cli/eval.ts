/**
 * `tinyq eval`: how far a quantized checkpoint is from its original, layer by
 * layer — the weights themselves, and the output of `forward` on seeded
 * random inputs (float `Linear` vs the quantized layer) — plus a check that
 * every other tensor came through byte for byte.
 *
 * @module
 */

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
import { W8A16LinearLayer } from "../quant/w8a16_linear_layer.ts";
import { W8A32LinearLayer } from "../quant/w8a32_linear_layer.ts";
import { seededNormals } from "../demo/demo_checkpoint.ts";
import { flag, parseCommandArgs, str } from "./_args.ts";
import { type CliIO, UsageError } from "./_io.ts";
import { formatTable, shape } from "./tables.ts";

/** `tinyq eval --help`. */
export const EVAL_HELP = `Usage: tinyq eval <original> <quantized> [options]

Compares a quantized checkpoint with the float one it came from. For each
quantized Linear: the weight error (max |error|, RMSE, SNR in dB, cosine) of
q * scale against the original weight, and the error of forward() on seeded
random inputs (float Linear vs the quantized layer, on the chosen backend).
Also checks that every other tensor is byte-identical. Ends with a verdict:
PASS (output SNR >= 30 dB everywhere), WARN (>= 20 dB), FAIL (worse, or a
tensor changed); exit status 1 on FAIL.

Options:
      --backend <b>   auto (default), cpu or webgpu (also TINYQ_BACKEND)
      --tokens <n>    rows of random input per layer (default 8)
      --seed <n>      seed of the random inputs (default 0)
      --json          print the report as JSON on stdout
  -v, --verbose       stack traces on errors
  -h, --help          show this help
`;

/** Error figures of one comparison. */
export interface ErrorStats {
  /** Largest absolute difference. */
  maxAbs: number;
  /** Root mean square of the difference. */
  rmse: number;
  /** 10·log10(Σ ref² / Σ diff²), Infinity for an exact match. */
  snrDb: number;
  /** Cosine similarity. */
  cosine: number;
}

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

/**
 * Error statistics of `got` against `ref`.
 */
export function errorStats(
  ref: ArrayLike<number>,
  got: ArrayLike<number>,
): ErrorStats {
  let maxAbs = 0;
  let d2 = 0;
  let r2 = 0;
  let g2 = 0;
  let dot = 0;
  for (let i = 0; i < ref.length; i++) {
    const r = ref[i]!;
    const g = got[i]!;
    const d = g - r;
    const a = Math.abs(d);
    if (a > maxAbs || Number.isNaN(a)) maxAbs = a;
    d2 += d * d;
    r2 += r * r;
    g2 += g * g;
    dot += r * g;
  }
  const n = Math.max(1, ref.length);
  return {
    maxAbs,
    rmse: Math.sqrt(d2 / n),
    snrDb: d2 === 0 ? Infinity : 10 * Math.log10(r2 / d2),
    cosine: r2 === 0 && g2 === 0 ? 1 : dot / Math.sqrt(r2 * g2),
  };
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
  for (const path of q.modules) {
    for (const n of format.storedNames(path)) stored.add(n);
    const wName = `${path}.weight`;
    const we = orig.entry(wName);
    if (!we) {
      throw new CheckpointError(
        originalPath,
        `has no "${wName}", which the quantized checkpoint quantized; are they the same model?`,
      );
    }
    const d = await quant.decodeLinear(path);
    const stored2 = await orig.read(wName);
    const [a, b] = stored2.shape as [number, number];
    const t = transposed.has(path);
    const [out, inF] = t ? [b, a] : [a, b];
    if (out !== d.outFeatures || inF !== d.inFeatures) {
      throw new CheckpointError(
        quantizedPath,
        `is [${d.outFeatures}, ${d.inFeatures}] but the original weight is ${
          shape(stored2.shape)
        }${t ? " (Conv1D)" : ""}`,
        `${path}.int8_weights`,
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
    const deq = new Float32Array(w.length);
    for (let r = 0; r < out; r++) {
      const s = d.scales[r]!;
      const z = d.zeroPoints ? d.zeroPoints[r]! : 0;
      for (let c = 0; c < inF; c++) {
        deq[r * inF + c] = (d.q[r * inF + c]! - z) * s;
      }
    }
    const weight = errorStats(w, deq);

    const bName = `${path}.bias`;
    const bias = quant.entry(bName) ? await quant.read(bName) : null;
    const Target = q.method === "w8a32" ? W8A32LinearLayer : W8A16LinearLayer;
    const layer = new Target(inF, out, { bias: false });
    layer.int8Weights = new Tensor(d.q, [out, inF]);
    layer.scales = new Tensor(d.scales, [out]);
    layer.zeroPoints = d.zeroPoints ? new Tensor(d.zeroPoints, [out]) : null;
    layer.bias = bias;
    const float = Linear.fromTensors(new Tensor(w, [out, inF]), bias);
    const xDtype = q.method === "w8a32"
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
      !quant.entry(`${l.path}.weight`)
    ) {
      changed.push(`${l.path}.weight (missing from the quantized checkpoint)`);
    }
  }
  let worst: LayerEval | null = null;
  for (const l of layers) {
    if (!worst || !(l.output.snrDb >= worst.output.snrDb)) worst = l;
  }
  const worstDb = worst?.output.snrDb ?? Infinity;
  const verdict = changed.length > 0 || !(worstDb >= 20)
    ? "fail"
    : worstDb >= 30
    ? "pass"
    : "warn";
  const where = worst
    ? `worst output SNR ${worstDb.toFixed(1)} dB (${worst.path})`
    : "no quantized layers";
  const verdictLine = verdict === "fail" && changed.length > 0
    ? `FAIL: ${changed.length} tensor(s) that should pass through unchanged differ: ${
      changed.slice(0, 3).join(", ")
    }`
    : `${verdict.toUpperCase()}: ${layers.length} layers, ${where}; ${identical} other tensors byte-identical` +
      (verdict === "pass"
        ? " — int8 per-channel error as expected"
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

function db(x: number): string {
  return x === Infinity ? "inf" : x.toFixed(1);
}

/** The report as a table plus the verdict line. */
export function formatEval(r: EvalReport): string {
  const table = formatTable(
    [
      "layer",
      "shape",
      "max|dW|",
      "RMSE(W)",
      "SNR(W) dB",
      "cos(W)",
      "SNR(y) dB",
      "cos(y)",
    ],
    r.layers.map((l) => [
      l.path,
      shape(l.shape),
      l.weight.maxAbs.toExponential(2),
      l.weight.rmse.toExponential(2),
      db(l.weight.snrDb),
      l.weight.cosine.toFixed(6),
      db(l.output.snrDb),
      l.output.cosine.toFixed(6),
    ]),
    ["left", "left", "right", "right", "right", "right", "right", "right"],
  );
  return `eval: ${r.quantized} (${r.method}) against ${r.original}\n` +
    `backend: ${r.backend.name} (${r.backend.reason})\n\n` + table +
    (r.changed.length
      ? `\nchanged:\n${r.changed.map((c) => `  ${c}\n`).join("")}`
      : "") +
    `\nverdict: ${r.verdictLine}\n`;
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
    backend: { type: "string" },
    tokens: { type: "string" },
    seed: { type: "string" },
    json: { type: "boolean" },
    verbose: { type: "boolean", short: "v" },
  }, { min: 2, max: 2, names: "<original> and <quantized> checkpoints" });
  if (flag(p, "help")) {
    io.out(EVAL_HELP);
    return 0;
  }
  applyBackend("eval", str(p, "backend"));
  const tokens = intFlag("eval", "tokens", str(p, "tokens"), 1);
  const seed = intFlag("eval", "seed", str(p, "seed"), 0);
  const r = await evaluateCheckpoints(p.positionals[0]!, p.positionals[1]!, {
    ...(tokens !== undefined ? { tokens } : {}),
    ...(seed !== undefined ? { seed } : {}),
  });
  io.out(
    flag(p, "json")
      ? JSON.stringify(r, (_k, v) => v === Infinity ? "inf" : v, 2) + "\n"
      : formatEval(r),
  );
  return r.verdict === "fail" ? 1 : 0;
}
