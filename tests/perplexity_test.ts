import assert from "node:assert/strict";
import {
  compareToReference,
  perplexity,
  perplexityWindows,
  referencePredictions,
} from "../src/models/perplexity.ts";
import { ToyEngine } from "./_toy_engine.ts";

// HF's recipe, written as in its guide (with -100 labels), to check ours against.
function hfPredicted(n: number, ctx: number, stride: number): number[] {
  const scored: number[] = [];
  let prevEnd = 0;
  for (let begin = 0; begin < n; begin += stride) {
    const end = Math.min(begin + ctx, n);
    const trgLen = end - prevEnd;
    const labels = Array.from({ length: end - begin }, (_, i) => begin + i);
    for (let i = 0; i < labels.length - trgLen; i++) labels[i] = -100;
    // the model shifts: label i is predicted from row i-1, so label 0 is never scored
    for (let i = 1; i < labels.length; i++) {
      if (labels[i] !== -100) scored.push(labels[i]!);
    }
    prevEnd = end;
    if (end === n) break;
  }
  return scored;
}

Deno.test("perplexity windows score exactly the tokens HF's sliding-window recipe scores", () => {
  for (
    const [n, ctx, stride] of [[10, 4, 2], [10, 4, 4], [9, 4, 3], [7, 8, 4], [
      100,
      16,
      5,
    ], [2, 2, 1]]
  ) {
    const { windows } = perplexityWindows(n!, 512, {
      ctx: ctx!,
      stride: stride!,
    });
    const ours = windows.flatMap((w) =>
      Array.from({ length: w.end - w.from }, (_, i) => w.from + i)
    );
    assert.deepEqual(
      ours,
      hfPredicted(n!, Math.min(ctx!, n!), stride!),
      `${n} ${ctx} ${stride}`,
    );
    for (const w of windows) assert.ok(w.end - w.begin <= ctx!);
  }
  // stride = ctx drops the first token of every later window, as HF's recipe does
  const { windows } = perplexityWindows(8, 512, { ctx: 4, stride: 4 });
  assert.deepEqual(windows, [{ begin: 0, end: 4, from: 1 }, {
    begin: 4,
    end: 8,
    from: 5,
  }]);
});

Deno.test("perplexity windows: defaults and range errors", () => {
  const d = perplexityWindows(100, 64);
  assert.deepEqual([d.ctx, d.stride], [64, 32]);
  assert.deepEqual(perplexityWindows(10, 64).windows, [{
    begin: 0,
    end: 10,
    from: 1,
  }]);
  assert.throws(
    () => perplexityWindows(1, 64),
    /the text is 1 token; perplexity needs at least 2/,
  );
  assert.throws(
    () => perplexityWindows(10, 64, { ctx: 65 }),
    /ctx must be a whole number from 2 to the model's context of 64, got 65/,
  );
  assert.throws(
    () => perplexityWindows(10, 64, { ctx: 8, stride: 9 }),
    /stride must be a whole number from 1 to ctx \(8\), got 9/,
  );
});

const vocab = 50;
const toy = () => new ToyEngine(vocab, (t) => (t * 3 + 1) % vocab);
const logitsOf = (e: ToyEngine) => (ids: readonly number[]) => {
  e.reset();
  return e.step(ids, 0, "all");
};

function directNll(e: ToyEngine, ids: number[], scored: number[]): number {
  let s = 0;
  for (const pos of scored) {
    const row = e.row(ids[pos - 1]!);
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0));
    s += lse - row[ids[pos]!]!;
  }
  return s / scored.length;
}

Deno.test("perplexity() is exp of the mean NLL over the predicted tokens", async () => {
  const ids = Array.from({ length: 30 }, (_, i) => (i * 7) % vocab);
  const e = toy();
  const whole = await perplexity(logitsOf(e), ids, vocab, 64);
  const nll = directNll(e, ids, ids.map((_, i) => i).slice(1));
  assert.ok(Math.abs(whole.nll - nll) < 1e-6);
  assert.ok(Math.abs(whole.ppl - Math.exp(nll)) < 1e-6);
  assert.deepEqual([whole.tokens, whole.predicted, whole.windows], [30, 29, 1]);
  // a model whose logits depend on the last token only gives the same figure in windows
  const windowed = await perplexity(logitsOf(e), ids, vocab, 64, {
    ctx: 8,
    stride: 4,
  });
  assert.equal(windowed.predicted, 29);
  assert.ok(Math.abs(windowed.nll - nll) < 1e-6);
  const progress: number[] = [];
  await perplexity(logitsOf(e), ids, vocab, 64, {
    ctx: 8,
    stride: 4,
    onWindow: (d) => progress.push(d),
  });
  assert.deepEqual(progress, [1, 2, 3, 4, 5, 6, 7]);
});

Deno.test("non-finite logits are an error naming the position", async () => {
  const bad = (ids: readonly number[]) => {
    const out = new Float32Array(ids.length * vocab);
    out[2 * vocab + 5] = NaN;
    return Promise.resolve(out);
  };
  await assert.rejects(
    () => perplexity(bad, [1, 2, 3, 4], vocab, 64),
    /NaN in the logits at position 2 \(token id 5\)/,
  );
});

Deno.test("the float model against itself: KL 0, top-1 agreement 1; a perturbed model: KL > 0", async () => {
  const ids = Array.from({ length: 20 }, (_, i) => (i * 11) % vocab);
  const e = toy();
  const ref = await referencePredictions(logitsOf(e), ids, vocab, 64);
  const same = await compareToReference(logitsOf(e), ids, vocab, ref);
  assert.ok(same.kl < 1e-9);
  assert.equal(same.top1, 1);
  assert.ok(Math.abs(same.ppl - ref.result.ppl) < 1e-9);
  // shift the strongest logit to another token in every row: KL grows, top-1 drops to 0
  const other = toy();
  const perturbed = async (x: readonly number[]) => {
    const l = await logitsOf(other)(x);
    for (let r = 0; r < x.length; r++) {
      const row = l.subarray(r * vocab, (r + 1) * vocab);
      const j = (x[r]! * 3 + 1) % vocab;
      row[(j + 1) % vocab] = row[j]! + 1;
    }
    return l;
  };
  const worse = await compareToReference(perturbed, ids, vocab, ref);
  assert.ok(worse.kl > 0.1);
  assert.equal(worse.top1, 0);
  assert.ok(worse.ppl > ref.result.ppl);
});
