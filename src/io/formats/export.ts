/**
 * What the export formats (compressed-tensors, optimum-quanto) share: the
 * float dtype their scales are stored in, reading their tensors back, the
 * `__metadata__` entry that lets TinyQ recognise its own exports, and what
 * their loaders expect of `lm_head`.
 *
 * @module
 */

import {
  type DType,
  f32ToFloatArray,
  type FloatDType,
  isFloatDType,
} from "../../dtype.ts";
import type { Tensor } from "../../tensor.ts";
import type { DetectContext, QuantizationSummary } from "./format.ts";

/**
 * The `__metadata__` key of TinyQ's exports. It is not the native format's
 * `"quantization"` key, so the native reader never mistakes an export for its
 * own layout.
 */
export const EXPORT_METADATA_KEY = "tinyq";

/**
 * The dtype scales are stored in: the float dtype of the weight they came
 * from (as both libraries do), f32 for anything else (f64), which holds our
 * f32 scales exactly.
 */
export function scaleDtypeFor(source: DType): FloatDType {
  return isFloatDType(source) ? source : "f32";
}

/** Little-endian bytes of f32 scales rounded (nearest even) to `dtype`. */
export function scaleBytes(
  scales: Float32Array,
  dtype: FloatDType,
): Uint8Array {
  const a = f32ToFloatArray(scales, dtype);
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Bytes of a 0-d tensor holding 1 in `dtype`. */
export function oneBytes(dtype: FloatDType): Uint8Array {
  return scaleBytes(new Float32Array([1]), dtype);
}

/**
 * The weight dtype of a checkpoint another tool wrote: the float dtype all of
 * `modules`' scales (tensor `<module><scaleSuffix>`) share, if they share one.
 */
export function weightDtypeFromScales(
  modules: readonly string[],
  tensors: DetectContext["tensors"],
  scaleSuffix: string,
): { weightDtype?: FloatDType } {
  const dtypes = new Set(
    modules.map((m) => tensors.get(`${m}${scaleSuffix}`)?.dtype),
  );
  const only = dtypes.size === 1 ? [...dtypes][0] : undefined;
  return only && isFloatDType(only) ? { weightDtype: only } : {};
}

/** `I8 [2, 3]`: a tensor's dtype and shape as an error message gives them. */
export function describeTensor(t: Tensor): string {
  return `${t.dtype.toUpperCase()} [${t.shape.join(", ")}]`;
}

/**
 * [out, in] of `t`, which must be an I8 matrix; else a TypeError naming it,
 * with `note` saying what the format calls it.
 */
export function int8Matrix(
  t: Tensor,
  name: string,
  note = "",
): [out: number, inF: number] {
  if (t.dtype !== "i8" || t.ndim !== 2) {
    throw new TypeError(
      `"${name}" must be I8 [out, in]${note}, got ${describeTensor(t)}`,
    );
  }
  return t.shape as [number, number];
}

/** Reads a tensor the checkpoint must have, or says which one is missing. */
export async function required(
  read: (name: string) => Promise<Tensor | null>,
  name: string,
  path: string,
): Promise<Tensor> {
  const t = await read(name);
  if (!t) {
    throw new TypeError(
      `"${path}" is listed as quantized but has no "${name}"`,
    );
  }
  return t;
}

/**
 * One f32 scale per output row from a float tensor of shape [out, 1] or
 * [out]; any other count (group-wise scales) is refused.
 */
export function perRowScales(
  t: Tensor,
  out: number,
  name: string,
): Float32Array {
  const perRow = (t.ndim === 2 && t.shape[0] === out && t.shape[1] === 1) ||
    (t.ndim === 1 && t.shape[0] === out);
  if (!isFloatDType(t.dtype) && t.dtype !== "f64") {
    throw new TypeError(
      `"${name}" must be a float tensor, got ${t.dtype.toUpperCase()}`,
    );
  }
  if (!perRow) {
    throw new TypeError(
      `"${name}" has shape [${
        t.shape.join(", ")
      }]; TinyQ reads one scale per output row ([${out}, 1])`,
    );
  }
  return Float32Array.from(t.toF32Array());
}

/** The `__metadata__` entry describing an export. */
export function exportMetadata(
  format: string,
  s: QuantizationSummary,
): Record<string, string> {
  return {
    [EXPORT_METADATA_KEY]: JSON.stringify({
      format,
      library: s.library,
      version: s.version,
      method: s.method,
      bits: s.bits,
      ...(s.groupSize ? { group_size: s.groupSize } : {}),
      granularity: s.granularity,
      symmetric: s.symmetric,
      ...(s.activations ? { activations: s.activations } : {}),
      ...(s.weightDtype ? { weight_dtype: s.weightDtype } : {}),
      modules: s.modules,
      excluded: s.excluded,
      transposed: s.transposed,
    }),
  };
}

function stringList(v: unknown, what: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
    throw new TypeError(`${what} must be a list of strings`);
  }
  return [...v];
}

/**
 * The summary TinyQ wrote with an export in `format`, or null when the
 * metadata holds none (or one for another format).
 */
export function summaryFromExportMetadata(
  format: string,
  metadata: Readonly<Record<string, string>> | null,
): QuantizationSummary | null {
  const text = metadata?.[EXPORT_METADATA_KEY];
  if (text === undefined) return null;
  const where = `__metadata__ "${EXPORT_METADATA_KEY}"`;
  let r: unknown;
  try {
    r = JSON.parse(text);
  } catch {
    throw new TypeError(`${where} is not JSON`);
  }
  if (!isRecord(r)) throw new TypeError(`${where} is not a JSON object`);
  if (r.format !== format) return null;
  const str = (k: string, fallback: string): string =>
    typeof r[k] === "string" ? r[k] as string : fallback;
  return {
    library: str("library", "tinyq"),
    version: str("version", "unknown"),
    method: str("method", "w8a16"),
    bits: typeof r.bits === "number" ? r.bits : 8,
    granularity: str("granularity", "per-channel"),
    symmetric: r.symmetric !== false,
    modules: stringList(r.modules, `${where}: "modules"`),
    excluded: stringList(r.excluded, `${where}: "excluded"`),
    transposed: stringList(r.transposed, `${where}: "transposed"`),
    ...(typeof r.weight_dtype === "string"
      ? { weightDtype: r.weight_dtype as DType }
      : {}),
    ...(typeof r.group_size === "number" ? { groupSize: r.group_size } : {}),
    ...(typeof r.activations === "string"
      ? { activations: r.activations }
      : {}),
  };
}

/** The module paths whose tensors end in `suffix` (e.g. `.weight_packed`). */
export function pathsWithSuffix(
  names: Iterable<string>,
  suffix: string,
): string[] {
  const out: string[] = [];
  for (const n of names) {
    if (n.endsWith(suffix) && n.length > suffix.length) {
      out.push(n.slice(0, -suffix.length));
    }
  }
  return out.sort();
}

/** Refuses summaries an int8 symmetric per-channel export cannot describe. */
export function checkInt8Symmetric(
  format: string,
  s: QuantizationSummary,
): void {
  if (
    s.bits !== 8 || !s.symmetric || s.granularity !== "per-channel" ||
    (s.groupSize ?? null) !== null
  ) {
    throw new TypeError(
      `--format ${format} writes 8-bit symmetric per-channel weights; this checkpoint is ` +
        `${s.bits}-bit ${s.symmetric ? "symmetric" : "asymmetric"} ${
          s.groupSize ? `group-wise (group size ${s.groupSize})` : s.granularity
        }`,
    );
  }
  // "f32", "f16/bf16": float activations; anything else quantizes them.
  if (s.activations && !/^b?f\d+(\/b?f\d+)*$/.test(s.activations)) {
    // The weights would be right, but the file would describe a weight-only
    // model and the engine would run it as one.
    throw new TypeError(
      `--format ${format} writes weight-only int8 (W8A16); --method ${s.method} ` +
        `also quantizes activations (${s.activations}), which it cannot record: use --method w8a16`,
    );
  }
}

/** A JSON object (not an array, not null). */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * The output embedding: vLLM loads it unquantized, and quanto's loaders tie
 * it to the input embedding unless `config.json` says otherwise.
 */
export function isLmHead(path: string): boolean {
  return path === "lm_head" || path.endsWith(".lm_head");
}
