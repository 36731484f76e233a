/**
 * `tinyq eval <original> --schemes …`: every quantization scheme side by
 * side on one float checkpoint, without writing anything. Each Linear weight
 * is read once, quantized in memory under every scheme, compared with the
 * original (weights, and `forward` on seeded random inputs against the float
 * layer) and dropped, so memory holds one layer at a time. One row per
 * scheme: bits per weight, checkpoint size, weight SNR (mean and worst
 * layer), largest weight error, output error and cosine — the table to read
 * before choosing `--method`, `--group-size` and `--asymmetric`.
 *
 * @module
 */

import { memberName } from "../member_name.ts";
import { getBackend } from "../backend/select.ts";
import { DTYPE_SIZE, type FloatDType, isFloatDType } from "../dtype.ts";
import { Checkpoint, CheckpointError } from "../io/checkpoint.ts";
import { CheckpointTensor } from "../io/checkpoint_tensor.ts";
import { tinyqFormat } from "../io/formats/tinyq.ts";
import { splitByGroupSize } from "../io/group_check.ts";
import { Linear } from "../linear.ts";
import { numel, Tensor } from "../tensor.ts";
import { INT4_GROUP_SIZES } from "../quant/int4.ts";
import {
  isQuantMethod,
  METHOD_NAMES,
  METHODS,
  type QuantMethod,
  weightSchemeOf,
} from "../quant/schemes.ts";
import { excludeMatcher } from "../quant/replace.ts";
import { seededNormals } from "../demo/demo_checkpoint.ts";
import { type ErrorStats, errorStats, formatDb } from "./_error_stats.ts";
import { formatTable, wrapText } from "./tables.ts";

/** One scheme to try: a method, and for it a group size and zero points. */
export interface SchemeSpec {
  /** Canonical name (`w8a16`, `w8a16-asym`, `w4a16-g32-asym`, …). */
  readonly name: string;
  /** The layer method. */
  readonly method: QuantMethod;
  /** Inputs per 4-bit group (w4a16), else null. */
  readonly groupSize: number | null;
  /** Zero points. */
  readonly asymmetric: boolean;
}

/** The schemes `tinyq eval <original>` compares when `--schemes` is not given. */
export const DEFAULT_SCHEMES: readonly string[] = Object.freeze([
  "w8a32",
  "w8a16",
  "w8a16-asym",
  "w8a8",
  "w4a16-g128",
  "w4a16-g128-asym",
  "w4a16-g32",
  "w4a16-g32-asym",
]);

const GROUP_PARTS = INT4_GROUP_SIZES.map((g) => `-g${g}`);
const GROUP_PART = new RegExp(`^g(${INT4_GROUP_SIZES.join("|")})$`);

/**
 * Reads a scheme name: a method (`w8a32`, `w8a16`, `w8a8`, `w4a16`), then
 * optionally `-g32`/`-g64`/`-g128` (w4a16 only; default 128) and `-asym`,
 * in either order. Throws a RangeError saying what is accepted.
 */
export function parseScheme(text: string): SchemeSpec {
  const parts = text.trim().toLowerCase().split("-");
  const method = parts[0]!;
  if (!isQuantMethod(method)) {
    throw new RangeError(
      `unknown scheme "${text}"; a scheme is a method (${
        METHOD_NAMES.join(", ")
      }) with optional ${
        GROUP_PARTS.join("/")
      } (w4a16) and -asym, e.g. w4a16-g32-asym`,
    );
  }
  let groupSize: number | null = null;
  let asymmetric = false;
  for (const p of parts.slice(1)) {
    const g = GROUP_PART.exec(p);
    if (p === "asym" && !asymmetric) asymmetric = true;
    else if (g && groupSize === null) groupSize = Number(g[1]);
    else {
      throw new RangeError(
        `unknown part "-${p}" in scheme "${text}"; expected ${
          GROUP_PARTS.join(", ")
        } or -asym`,
      );
    }
  }
  const grouped = METHODS[method].layout.bits === 4;
  if (groupSize !== null && !grouped) {
    throw new RangeError(
      `scheme "${text}": a group size applies to w4a16 only (the int8 methods have one scale per output row)`,
    );
  }
  if (grouped) {
    groupSize = weightSchemeOf(method, {
      ...(groupSize !== null ? { groupSize } : {}),
    }).groupSize;
  }
  const name = `${method}${groupSize !== null ? `-g${groupSize}` : ""}${
    asymmetric ? "-asym" : ""
  }`;
  return { name, method, groupSize, asymmetric };
}

/** The activations a method's forward takes, given the weights' dtype: the 16-bit one where it takes it. */
function activationDtype(method: QuantMethod, weight: FloatDType): FloatDType {
  const takes = METHODS[method].layer.activations;
  const half = weight === "f16" ? "f16" : "bf16";
  return takes.includes(half) ? half : takes[0]!;
}

/** One scheme's figures over all compared layers. */
export interface SchemeRow {
  /** The scheme. */
  scheme: SchemeSpec;
  /** What forward does with activations. */
  activations: string;
  /** Stored bits per quantized weight, scales and zero points included. */
  bitsPerWeight: number;
  /** Bytes of the whole checkpoint quantized this way. */
  checkpointBytes: number;
  /** Weight SNR in dB: mean over layers. */
  weightSnrMeanDb: number;
  /** Weight SNR in dB: the worst layer. */
  weightSnrMinDb: number;
  /** Largest |dequantized − original| weight over all layers. */
  weightMaxAbs: number;
  /** Output error ‖y_q − y‖ / ‖y‖: mean over layers. */
  outputRelErrMean: number;
  /** Output error ‖y_q − y‖ / ‖y‖: the worst layer. */
  outputRelErrMax: number;
  /** Cosine of quantized and float outputs: the worst layer. */
  outputCosineMin: number;
  /** Per-layer figures (of the layers quantized). */
  layers: { path: string; weight: ErrorStats; output: ErrorStats }[];
  /** Layers this scheme keeps in float: 4-bit groups do not divide their inputs. */
  keptFloat: string[];
}

/** What {@linkcode compareSchemes} found. */
export interface SchemeReport {
  /** The float checkpoint. */
  original: string;
  /** The backend forward ran on, and why. */
  backend: { name: string; reason: string };
  /** Linear layers compared. */
  layers: number;
  /** Linear layers left out by `exclude`. */
  excluded: string[];
  /** Random input rows per layer. */
  tokens: number;
  /** Seed of the inputs. */
  seed: number;
  /** Bytes of the float checkpoint. */
  originalBytes: number;
  /** Bits per weight of the float Linear weights. */
  originalBitsPerWeight: number;
  /** One row per scheme, in the order asked. */
  rows: SchemeRow[];
}

/** Options of {@linkcode compareSchemes}. */
export interface CompareOptions {
  /** Scheme names (default {@linkcode DEFAULT_SCHEMES}). */
  schemes?: readonly string[];
  /** Linear layers to leave out: child names or dotted-path globs. */
  exclude?: readonly string[];
  /** Rows of random input per layer (default 8). */
  tokens?: number;
  /** Seed (default 0). */
  seed?: number;
  /** Called after each layer (for a progress bar): weight bytes and layers done. */
  onProgress?: (p: {
    bytesDone: number;
    bytesTotal: number;
    layersDone: number;
    layersTotal: number;
  }) => void;
}

/**
 * Quantizes every Linear of the float checkpoint at `originalPath` under each
 * scheme in memory, one layer at a time, and measures the error of each.
 * Inputs are the same for every scheme: seeded normal rows rounded to the
 * 16-bit activation dtype (so f32 and 16-bit layers see identical values);
 * the reference is the float Linear in f32 on them.
 */
export async function compareSchemes(
  originalPath: string,
  options: CompareOptions = {},
): Promise<SchemeReport> {
  const tokens = options.tokens ?? 8;
  const seed = options.seed ?? 0;
  const specs = (options.schemes ?? DEFAULT_SCHEMES).map(parseScheme);
  using ckpt = await Checkpoint.open(originalPath);
  if (ckpt.quantization || ckpt.alreadyQuantized()) {
    throw new CheckpointError(
      originalPath,
      `${
        ckpt.alreadyQuantized() ?? "is quantized"
      }; comparing schemes needs the float original`,
    );
  }
  const isExcluded = excludeMatcher(options.exclude ?? []);
  const all = ckpt.linears();
  const linears = all.filter((l) => !isExcluded(l.path));
  const excluded = all.filter((l) => isExcluded(l.path)).map((l) => l.path);
  // Per scheme, the layers its 4-bit groups cannot split: kept in float, as
  // `quantize` would keep them, so they count at their float size.
  const misfits = specs.map((s) =>
    s.groupSize === null ? new Set<string>() : new Set(
      splitByGroupSize(
        originalPath,
        linears.map((l) => ({ path: l.path, inFeatures: l.inFeatures! })),
        s.groupSize,
      ).misfits.map((m) => m.path),
    )
  );
  const info = await getBackend();
  const originalBytes = ckpt.entries.reduce((s, e) => s + e.info.byteLength, 0);
  let weightBytes = 0;
  let params = 0;
  const bytesTotal = linears.reduce(
    (s, l) => s + ckpt.entry(memberName(l.path, "weight"))!.info.byteLength,
    0,
  );
  const stored = specs.map(() => 0);
  const rows: SchemeRow[] = specs.map((scheme) => ({
    scheme,
    activations: METHODS[scheme.method].activationsShort,
    bitsPerWeight: 0,
    checkpointBytes: 0,
    weightSnrMeanDb: 0,
    weightSnrMinDb: Infinity,
    weightMaxAbs: 0,
    outputRelErrMean: 0,
    outputRelErrMax: 0,
    outputCosineMin: 1,
    layers: [],
    keptFloat: [],
  }));
  for (const [index, l] of linears.entries()) {
    const entry = ckpt.entry(memberName(l.path, "weight"))!;
    const out = l.outFeatures!, inF = l.inFeatures!;
    const weight = await new CheckpointTensor(ckpt, entry, l.transposed).load();
    if (!isFloatDType(weight.dtype)) {
      throw new CheckpointError(
        originalPath,
        `is ${weight.dtype}, not a float weight`,
        entry.name,
      );
    }
    const dtype = weight.dtype as FloatDType;
    weightBytes += entry.info.byteLength;
    params += out * inF;
    const w = weight.toF32Array();
    const biasEntry = ckpt.entry(memberName(l.path, "bias"));
    const bias = biasEntry ? await ckpt.read(biasEntry.name) : null;
    const float = Linear.fromTensors(new Tensor(w, [out, inF]), bias);
    const x16 = new Tensor(
      seededNormals(seed * 7919 + index)(new Float32Array(tokens * inF)),
      [tokens, inF],
    ).to(dtype === "f16" ? "f16" : "bf16");
    const ref = (await float.forward(x16.to("f32"))).toF32Array();
    float.dispose();
    for (const [i, s] of specs.entries()) {
      if (misfits[i]!.has(l.path)) {
        rows[i]!.keptFloat.push(l.path);
        stored[i]! += entry.info.byteLength;
        continue;
      }
      const layer = new METHODS[s.method].layer(inF, out, {
        bias: false,
        ...(s.groupSize !== null ? { groupSize: s.groupSize } : {}),
        name: entry.name,
      });
      layer.quantize(weight, { asymmetric: s.asymmetric, name: entry.name });
      layer.bias = bias;
      const werr = errorStats(w, layer.dequantize().toF32Array());
      const y = await layer.forward(x16.to(activationDtype(s.method, dtype)));
      layer.dispose();
      const yerr = errorStats(ref, y.toF32Array());
      rows[i]!.layers.push({ path: l.path, weight: werr, output: yerr });
      stored[i]! += tinyqFormat.linearTensors(
        l.path,
        out,
        inF,
        dtype,
        weightSchemeOf(s.method, {
          asymmetric: s.asymmetric,
          ...(s.groupSize !== null ? { groupSize: s.groupSize } : {}),
        }),
      ).reduce((sum, t) => sum + numel(t.shape) * DTYPE_SIZE[t.dtype], 0);
    }
    options.onProgress?.({
      bytesDone: weightBytes,
      bytesTotal,
      layersDone: index + 1,
      layersTotal: linears.length,
    });
  }
  for (const [i, row] of rows.entries()) {
    const ls = row.layers;
    const n = Math.max(1, ls.length);
    row.bitsPerWeight = params ? (stored[i]! * 8) / params : 0;
    row.checkpointBytes = originalBytes - weightBytes + stored[i]!;
    // Every layer kept in float: no error at all.
    if (ls.length === 0) row.weightSnrMeanDb = Infinity;
    for (const l of ls) {
      const rel = relErr(l.output);
      row.weightSnrMeanDb += l.weight.snrDb / n;
      row.weightSnrMinDb = Math.min(row.weightSnrMinDb, l.weight.snrDb);
      row.weightMaxAbs = Math.max(row.weightMaxAbs, l.weight.maxAbs);
      row.outputRelErrMean += rel / n;
      row.outputRelErrMax = Math.max(row.outputRelErrMax, rel);
      row.outputCosineMin = Math.min(row.outputCosineMin, l.output.cosine);
    }
  }
  return {
    original: originalPath,
    backend: { name: info.name as string, reason: info.reason },
    layers: linears.length,
    excluded,
    tokens,
    seed,
    originalBytes,
    originalBitsPerWeight: params ? (weightBytes * 8) / params : 0,
    rows,
  };
}

/** ‖d‖ / ‖ref‖ from an SNR in dB (0 for an exact match). */
function relErr(s: ErrorStats): number {
  return s.snrDb === Infinity ? 0 : 10 ** (-s.snrDb / 20);
}

function pct(x: number): string {
  return `${(x * 100).toFixed(2)}%`;
}

/** The comparison as a table, one row per scheme, with a legend. */
export function formatSchemes(r: SchemeReport, width = Infinity): string {
  const mib = (b: number) => (b / 2 ** 20).toFixed(2);
  const rows = [
    [
      "original",
      "float",
      r.originalBitsPerWeight.toFixed(2),
      mib(r.originalBytes),
      "",
      "",
      "",
      "",
      "",
      "",
    ],
    ...r.rows.map((row) => [
      row.scheme.name,
      row.activations,
      row.bitsPerWeight.toFixed(2),
      mib(row.checkpointBytes),
      formatDb(row.weightSnrMeanDb),
      formatDb(row.weightSnrMinDb),
      row.weightMaxAbs.toExponential(2),
      pct(row.outputRelErrMean),
      pct(row.outputRelErrMax),
      row.outputCosineMin.toFixed(5),
    ]),
  ];
  const align: ("left" | "right")[] = [
    "left",
    "left",
    ...new Array<"right">(8).fill("right"),
  ];
  let table = formatTable(
    [
      "scheme",
      "activations",
      "bits/W",
      "size MiB",
      "SNR(W) mean",
      "SNR(W) min",
      "max|dW|",
      "err(y) mean",
      "err(y) max",
      "cos(y) min",
    ],
    rows,
    align,
  );
  let activations = "";
  if (Math.max(...table.split("\n").map((l) => l.length)) > width) {
    // Narrow terminal: short headers, activations in the legend, max|dW|
    // left to --json.
    const keep = [0, 2, 3, 4, 5, 7, 8, 9];
    table = formatTable(
      ["scheme", "bits/W", "MiB", "SNR(W)", "min", "err(y)", "max", "cos min"],
      rows.map((row) => keep.map((i) => row[i]!)),
      keep.map((i) => align[i]!),
    );
    const seen = new Map<string, string>();
    for (const row of r.rows) {
      seen.set(row.scheme.method, row.activations);
    }
    activations = wrapText(
      `activations: ${
        [...seen].map(([m, a]) => `${m} ${a}`).join(", ")
      }; SNR(W) and err(y): mean, then worst layer; max|dW| in --json.`,
      Math.min(width, 80),
      "",
    ) + "\n";
  }
  const w = Number.isFinite(width) ? width : Infinity;
  const head = `schemes: ${r.original}, ${r.layers} Linear layers${
    r.excluded.length
      ? ` (${r.excluded.length} excluded: ${r.excluded.slice(0, 4).join(", ")}${
        r.excluded.length > 4 ? ", …" : ""
      })`
      : ""
  }, ${r.tokens} random tokens per layer (seed ${r.seed})`;
  return wrapText(head, w) + "\n" +
    wrapText(`backend: ${r.backend.name} (${r.backend.reason})`, w) +
    "\n\n" + table +
    "\nbits/W: stored bits per Linear weight, scales and zero points included;\n" +
    "size: the whole checkpoint quantized so. SNR(W): weight signal-to-noise\n" +
    "in dB (mean, worst layer); err(y): ||y_q - y|| / ||y|| of forward() against\n" +
    "the float layer (mean, worst layer); cos(y): worst layer.\n" +
    activations +
    r.rows.filter((row) => row.keptFloat.length > 0).map((row) =>
      wrapText(
        `${row.scheme.name}: ${row.keptFloat.length} layer(s) kept in float (inputs not a multiple of ${row.scheme.groupSize}): ${
          row.keptFloat.slice(0, 3).join(", ")
        }${row.keptFloat.length > 3 ? ", …" : ""}`,
        w,
      ) + "\n"
    ).join("");
}
