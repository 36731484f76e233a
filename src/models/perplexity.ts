/**
 * Perplexity of a token sequence, and how far a quantized model's
 * predictions are from the float model's on it.
 *
 * Windows follow Hugging Face's sliding-window recipe: windows of `ctx`
 * tokens starting every `stride` tokens, each scoring only the tokens the
 * previous window did not reach (so a token is predicted at most once, with
 * up to `ctx − stride` tokens of context before it). `ppl = exp(mean NLL)`
 * over every predicted token; for a sequence that fits in one window this is
 * transformers' `exp(model(ids, labels=ids).loss)`.
 *
 * @module
 */

/** Logits of `ids` from position 0 with a fresh cache: row-major [ids.length, vocab]. */
export type LogitsFn = (ids: readonly number[]) => Promise<Float32Array>;

/** Options of {@linkcode perplexity}. */
export interface PerplexityOptions {
  /** Tokens per window (default: the model's context, at most the text). */
  ctx?: number;
  /** Tokens between window starts (default: ctx / 2, as in HF's guide). */
  stride?: number;
  /** Called after each window with (windows done, windows in all). */
  onWindow?: (done: number, total: number) => void;
}

/** What {@linkcode perplexity} found. */
export interface PerplexityResult {
  /** exp(mean NLL). */
  ppl: number;
  /** Mean negative log-likelihood per predicted token, in nats. */
  nll: number;
  /** Tokens of the text (BOS included where the tokenizer adds it). */
  tokens: number;
  /** Tokens predicted (each at most once). */
  predicted: number;
  /** Window size and stride used. */
  ctx: number;
  /** Tokens between window starts. */
  stride: number;
  /** Windows run. */
  windows: number;
}

/** One window: the tokens fed and the absolute positions it scores. */
export interface PerplexityWindow {
  /** First position fed. */
  begin: number;
  /** One past the last position fed. */
  end: number;
  /** First position scored (predicted from the row before it). */
  from: number;
}

/**
 * The windows of HF's recipe over `n` tokens, and the ctx/stride used (the
 * defaults filled in). Throws a RangeError for a ctx or stride out of range.
 *
 * @example
 * ```ts
 * import { perplexityWindows } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const { windows } = perplexityWindows(10, 512, { ctx: 6, stride: 3 });
 * assert.deepEqual(windows, [
 *   { begin: 0, end: 6, from: 1 },
 *   { begin: 3, end: 9, from: 6 },
 *   { begin: 6, end: 10, from: 9 },
 * ]);
 * ```
 */
export function perplexityWindows(
  n: number,
  contextLength: number,
  options: { ctx?: number; stride?: number } = {},
): { ctx: number; stride: number; windows: PerplexityWindow[] } {
  if (n < 2) {
    throw new RangeError(
      `the text is ${n} token${
        n === 1 ? "" : "s"
      }; perplexity needs at least 2`,
    );
  }
  const ctx = options.ctx ?? contextLength;
  if (!(Number.isInteger(ctx) && ctx >= 2 && ctx <= contextLength)) {
    throw new RangeError(
      `ctx must be a whole number from 2 to the model's context of ${contextLength}, got ${ctx}`,
    );
  }
  const stride = options.stride ?? Math.max(1, Math.floor(ctx / 2));
  if (!(Number.isInteger(stride) && stride >= 1 && stride <= ctx)) {
    throw new RangeError(
      `stride must be a whole number from 1 to ctx (${ctx}), got ${stride}`,
    );
  }
  const windows: PerplexityWindow[] = [];
  let prevEnd = 0;
  for (let begin = 0; begin < n; begin += stride) {
    const end = Math.min(begin + ctx, n);
    const from = Math.max(prevEnd, begin + 1);
    if (from < end) windows.push({ begin, end, from });
    prevEnd = end;
    if (end === n) break;
  }
  return { ctx, stride, windows };
}

/** log(sum(exp(row))) in f64, stable. */
function logSumExp(row: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  let s = 0;
  for (let i = 0; i < row.length; i++) s += Math.exp(row[i]! - max);
  return max + Math.log(s);
}

function checkRow(row: Float32Array, pos: number): void {
  for (let i = 0; i < row.length; i++) {
    if (!Number.isFinite(row[i]!)) {
      throw new RangeError(
        `${row[i]} in the logits at position ${pos} (token id ${i})`,
      );
    }
  }
}

/**
 * Calls `visit(pos, row)` for every predicted position `pos` with the logits
 * row that predicts `ids[pos]`, window by window.
 */
export async function forEachPrediction(
  logits: LogitsFn,
  ids: readonly number[],
  vocab: number,
  windows: readonly PerplexityWindow[],
  visit: (pos: number, row: Float32Array) => void,
  onWindow?: (done: number, total: number) => void,
): Promise<void> {
  for (let w = 0; w < windows.length; w++) {
    const { begin, end, from } = windows[w]!;
    const all = await logits(ids.slice(begin, end));
    if (all.length !== (end - begin) * vocab) {
      throw new Error(
        `logits have ${all.length} values, expected ${end - begin} × ${vocab}`,
      );
    }
    for (let pos = from; pos < end; pos++) {
      const r = pos - 1 - begin;
      const row = all.subarray(r * vocab, (r + 1) * vocab);
      checkRow(row, pos - 1);
      visit(pos, row);
    }
    onWindow?.(w + 1, windows.length);
  }
}

/**
 * Perplexity of `ids` under the model whose logits `logits` computes.
 *
 * @example With a model that always predicts the uniform distribution
 * ```ts
 * import { perplexity } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const vocab = 8;
 * const uniform = (ids: readonly number[]) => Promise.resolve(new Float32Array(ids.length * vocab));
 * const r = await perplexity(uniform, [1, 2, 3, 4], vocab, 512);
 * assert.ok(Math.abs(r.ppl - vocab) < 1e-9); // ppl of a uniform guess is the vocab size
 * assert.equal(r.predicted, 3);
 * ```
 */
export async function perplexity(
  logits: LogitsFn,
  ids: readonly number[],
  vocab: number,
  contextLength: number,
  options: PerplexityOptions = {},
): Promise<PerplexityResult> {
  const { ctx, stride, windows } = perplexityWindows(
    ids.length,
    contextLength,
    options,
  );
  let sum = 0;
  let predicted = 0;
  await forEachPrediction(logits, ids, vocab, windows, (pos, row) => {
    sum += logSumExp(row) - row[ids[pos]!]!;
    predicted++;
  }, options.onWindow);
  const nll = sum / predicted;
  return {
    ppl: Math.exp(nll),
    nll,
    tokens: ids.length,
    predicted,
    ctx,
    stride,
    windows: windows.length,
  };
}

/** A quantized model against the float one, on the same tokens. */
export interface DivergenceResult extends PerplexityResult {
  /** Mean KL(float ‖ quantized) per predicted token, in nats. */
  kl: number;
  /** Fraction of predicted positions where both models' argmax agree. */
  top1: number;
}

/** The float model's predictions, kept to compare quantized models with. */
export interface Reference {
  /** Its perplexity. */
  result: PerplexityResult;
  /** Log-probabilities of each predicted position, [predicted, vocab]. */
  logProbs: Float32Array[];
  /** Argmax of each predicted position. */
  top: Int32Array;
  /** The windows used. */
  windows: PerplexityWindow[];
}

function logSoftmax(row: Float32Array): Float32Array {
  const lse = logSumExp(row);
  const out = new Float32Array(row.length);
  for (let i = 0; i < row.length; i++) out[i] = row[i]! - lse;
  return out;
}

function argmaxOf(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/**
 * Runs the float model once and keeps its log-probabilities, so that
 * {@linkcode compareToReference} can measure quantized models against it
 * (memory: predicted tokens × vocab floats).
 */
export async function referencePredictions(
  logits: LogitsFn,
  ids: readonly number[],
  vocab: number,
  contextLength: number,
  options: PerplexityOptions = {},
): Promise<Reference> {
  const { ctx, stride, windows } = perplexityWindows(
    ids.length,
    contextLength,
    options,
  );
  const logProbs: Float32Array[] = [];
  const top: number[] = [];
  let sum = 0;
  await forEachPrediction(logits, ids, vocab, windows, (pos, row) => {
    const lp = logSoftmax(row);
    logProbs.push(lp);
    top.push(argmaxOf(row));
    sum += -lp[ids[pos]!]!;
  }, options.onWindow);
  const nll = sum / logProbs.length;
  return {
    result: {
      ppl: Math.exp(nll),
      nll,
      tokens: ids.length,
      predicted: logProbs.length,
      ctx,
      stride,
      windows: windows.length,
    },
    logProbs,
    top: Int32Array.from(top),
    windows,
  };
}

/**
 * Perplexity of a (quantized) model on the reference's tokens, with the
 * mean KL divergence from the reference's distribution and top-1 agreement.
 */
export async function compareToReference(
  logits: LogitsFn,
  ids: readonly number[],
  vocab: number,
  reference: Reference,
  onWindow?: (done: number, total: number) => void,
): Promise<DivergenceResult> {
  let sum = 0;
  let kl = 0;
  let agree = 0;
  let k = 0;
  await forEachPrediction(logits, ids, vocab, reference.windows, (pos, row) => {
    const lq = logSoftmax(row);
    const lp = reference.logProbs[k]!;
    let d = 0;
    for (let i = 0; i < vocab; i++) {
      const p = Math.exp(lp[i]!);
      if (p > 0) d += p * (lp[i]! - lq[i]!);
    }
    kl += Math.max(0, d);
    if (argmaxOf(row) === reference.top[k]) agree++;
    sum += -lq[ids[pos]!]!;
    k++;
  }, onWindow);
  const nll = sum / k;
  return {
    ...reference.result,
    ppl: Math.exp(nll),
    nll,
    kl: kl / k,
    top1: agree / k,
  };
}
