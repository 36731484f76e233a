/**
 * How far one array of numbers is from another: the figures `tinyq eval`
 * prints for weights and outputs.
 *
 * @module
 */

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

/** An SNR in dB as `tinyq eval` prints it: one decimal, `inf` for an exact match. */
export function formatDb(x: number): string {
  return x === Infinity ? "inf" : x.toFixed(1);
}
