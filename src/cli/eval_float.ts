/**
 * `tinyq eval A B` where neither checkpoint is quantized: the two float
 * checkpoints compared tensor by tensor (a model and its dequantized copy,
 * a bf16 and an f32 export, two fine-tunes). Each tensor is read from both,
 * compared and dropped, so memory holds one pair at a time.
 *
 * @module
 */

import { isFloatDType } from "../dtype.ts";
import { Checkpoint } from "../io/checkpoint.ts";
import { type ErrorStats, errorStats } from "./_error_stats.ts";
import {
  clipLeft,
  formatTableFit,
  shape as fmtShape,
  wrapText,
} from "./tables.ts";
import type { ProgressState } from "./progress.ts";

/** One tensor of both checkpoints that is not byte-identical. */
export interface TensorDiff {
  /** Tensor name. */
  name: string;
  /** Shape in A. */
  shape: number[];
  /** Dtypes in A and B. */
  dtypes: [string, string];
  /** Error of B against A (float tensors of the same shape), or null. */
  stats: ErrorStats | null;
  /** Why they cannot be compared element-wise, or null. */
  problem: string | null;
}

/** What {@linkcode compareFloatCheckpoints} found. */
export interface FloatCompareReport {
  /** The first checkpoint (the reference). */
  a: string;
  /** The second. */
  b: string;
  /** Tensors present in both. */
  common: number;
  /** Of those, byte-identical. */
  identical: number;
  /** Of those, the same values in another float dtype. */
  sameValues: number;
  /** The others, in A's order. */
  differ: TensorDiff[];
  /** Names only in A. */
  onlyA: string[];
  /** Names only in B. */
  onlyB: string[];
  /** `identical`, `close` (every difference ≥ 30 dB SNR), or `differ`. */
  verdict: "identical" | "close" | "differ";
  /** The verdict in one line. */
  verdictLine: string;
}

/** Compares two float checkpoints tensor by tensor, B against A. */
export async function compareFloatCheckpoints(
  a: string,
  b: string,
  onProgress?: (p: ProgressState) => void,
): Promise<FloatCompareReport> {
  using ca = await Checkpoint.open(a);
  using cb = await Checkpoint.open(b);
  const common = ca.entries.filter((e) => cb.entry(e.name));
  const bytesTotal = common.reduce((s, e) => s + e.info.byteLength, 0);
  let bytesDone = 0;
  let identical = 0;
  let sameValues = 0;
  const differ: TensorDiff[] = [];
  for (const [i, ea] of common.entries()) {
    const eb = cb.entry(ea.name)!;
    const diff: TensorDiff = {
      name: ea.name,
      shape: [...ea.info.shape],
      dtypes: [ea.info.dtype, eb.info.dtype],
      stats: null,
      problem: null,
    };
    if (ea.info.shape.join() !== eb.info.shape.join()) {
      diff.problem = `shape ${fmtShape(ea.info.shape)} vs ${
        fmtShape(eb.info.shape)
      }`;
      differ.push(diff);
    } else {
      const ta = await ca.read(ea.name);
      const tb = await cb.read(eb.name);
      const same = ea.info.dtype === eb.info.dtype &&
        sameBytes(ta.bytes(), tb.bytes());
      if (same) identical++;
      else if (isFloatDType(ea.info.dtype) && isFloatDType(eb.info.dtype)) {
        diff.stats = errorStats(ta.toF32Array(), tb.toF32Array());
        // The same numbers in another dtype (bf16 → f32) are no difference.
        if (diff.stats.snrDb === Infinity) sameValues++;
        else differ.push(diff);
      } else {
        diff.problem = ea.info.dtype === eb.info.dtype
          ? "values differ"
          : "dtypes differ";
        differ.push(diff);
      }
    }
    bytesDone += ea.info.byteLength;
    onProgress?.({
      bytesDone,
      bytesTotal,
      layersDone: i + 1,
      layersTotal: common.length,
    });
  }
  const onlyA = ca.entries.filter((e) => !cb.entry(e.name)).map((e) => e.name);
  const onlyB = cb.entries.filter((e) => !ca.entry(e.name)).map((e) => e.name);
  const worst = differ.reduce(
    (w, d) => Math.min(w, d.stats ? d.stats.snrDb : -Infinity),
    Infinity,
  );
  const missing = onlyA.length + onlyB.length;
  const verdict = differ.length === 0 && missing === 0
    ? "identical"
    : missing === 0 && worst >= 30
    ? "close"
    : "differ";
  const same = sameValues > 0
    ? `${identical} byte-identical, ${sameValues} the same values in another dtype`
    : `${identical} byte-identical`;
  const verdictLine = verdict === "identical"
    ? sameValues > 0
      ? `IDENTICAL: all ${common.length} tensors hold the same values (${same})`
      : `IDENTICAL: all ${common.length} tensors byte-identical`
    : verdict === "close"
    ? `CLOSE: of ${common.length} tensors ${same}; the other ${differ.length} within ${
      worst.toFixed(1)
    } dB SNR or better`
    : `DIFFER: ${differ.length} of ${common.length} tensors differ${
      Number.isFinite(worst) ? ` (worst SNR ${worst.toFixed(1)} dB)` : ""
    }${missing ? `, ${missing} in only one checkpoint` : ""}`;
  return {
    a,
    b,
    common: common.length,
    identical,
    sameValues,
    differ,
    onlyA,
    onlyB,
    verdict,
    verdictLine,
  };
}

function sameBytes(x: Uint8Array, y: Uint8Array): boolean {
  if (x.byteLength !== y.byteLength) return false;
  for (let i = 0; i < x.byteLength; i++) if (x[i] !== y[i]) return false;
  return true;
}

function db(x: number): string {
  return x === Infinity ? "inf" : x.toFixed(1);
}

/** The comparison as text at most `width` columns wide. */
export function formatFloatCompare(r: FloatCompareReport, width = 80): string {
  const table = r.differ.length === 0 ? "" : formatTableFit(
    ["tensor", "shape", "dtypes", "max|d|", "SNR dB", "cos"],
    r.differ.map((d) => [
      d.name,
      fmtShape(d.shape),
      d.dtypes[0] === d.dtypes[1]
        ? d.dtypes[0]
        : `${d.dtypes[0]}/${d.dtypes[1]}`,
      d.stats ? d.stats.maxAbs.toExponential(2) : d.problem ?? "",
      d.stats ? db(d.stats.snrDb) : "",
      d.stats ? d.stats.cosine.toFixed(6) : "",
    ]),
    ["left", "left", "left", "right", "right", "right"],
    width,
  ) + "\n";
  const only = (label: string, names: string[]) =>
    names.length === 0 ? "" : wrapText(
      `only in ${label}: ${
        names.slice(0, 5).map((n) => clipLeft(n, 48)).join(", ")
      }${names.length > 5 ? `, … (${names.length} in all)` : ""}`,
      width,
    ) + "\n";
  return wrapText(
    `compare: ${r.b} against ${r.a} (two float checkpoints)`,
    width,
  ) +
    "\n\n" + table + only(r.a, r.onlyA) + only(r.b, r.onlyB) +
    wrapText(`verdict: ${r.verdictLine}`, width) + "\n";
}
