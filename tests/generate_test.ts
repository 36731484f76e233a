import assert from "node:assert/strict";
import { generate, type GenerationTarget } from "../src/models/generate.ts";
import { Tokenizer } from "../src/models/tokenizer.ts";
import { ToyEngine } from "./_toy_engine.ts";

const MODEL = new URL("../models/tinystories-656k", import.meta.url).pathname;
const tokenizer = await Tokenizer.load(MODEL);
const noTokenizer = await Tokenizer.load(
  new URL("./fixtures", import.meta.url).pathname,
);

// A chain through ordinary word tokens that reaches EOS (id 2) after 5 steps.
const CHAIN = [300, 301, 302, 303, 304, 2];
function target(
  overrides: Partial<GenerationTarget> = {},
): GenerationTarget & { engine: ToyEngine } {
  const engine = new ToyEngine(2048, (t) => {
    const i = CHAIN.indexOf(t);
    return i >= 0 ? CHAIN[i + 1] ?? CHAIN[0]! : CHAIN[0]!;
  });
  return {
    engine,
    tokenizer,
    contextLength: 32,
    vocabSize: 2048,
    ...overrides,
  } as GenerationTarget & { engine: ToyEngine };
}

Deno.test("generate() prefills the prompt in one step, then feeds one token per step at the next position", async () => {
  const t = target();
  const gen = generate(t, [1, 50, 60], { temperature: 0, maxNewTokens: 3 });
  const ids = [];
  for await (const tok of gen) ids.push(tok.id);
  assert.deepEqual(ids, [300, 301, 302]);
  // the third token is never fed: nothing needs its logits
  assert.deepEqual(t.engine.calls, [
    { tokens: [1, 50, 60], pos: 0 },
    { tokens: [300], pos: 3 },
    { tokens: [301], pos: 4 },
  ]);
  assert.equal(gen.stats?.stop, "length");
  assert.deepEqual(gen.stats?.tokens, [300, 301, 302]);
  assert.deepEqual(gen.stats?.promptIds, [1, 50, 60]);
});

Deno.test("generate() stops at EOS without yielding it, unless told to ignore it", async () => {
  let stats = await generate(target(), [1], {
    temperature: 0,
    maxNewTokens: 20,
  })
    .done();
  assert.deepEqual(stats.tokens, CHAIN.slice(0, 5));
  assert.equal(stats.stop, "eos");
  stats = await generate(target(), [1], {
    temperature: 0,
    maxNewTokens: 8,
    ignoreEos: true,
  }).done();
  assert.deepEqual(stats.tokens, [...CHAIN, 300, 301]);
  assert.equal(stats.stop, "length");
  // an EOS id from the model config counts too
  stats = await generate(target({ eosIds: [302] }), [1], {
    temperature: 0,
  }).done();
  assert.deepEqual(stats.tokens, [300, 301]);
});

Deno.test("generate() streams text pieces that add up to the decoded continuation", async () => {
  const prompt = "Once upon a time";
  const gen = generate(target(), prompt, { temperature: 0 });
  let streamed = "";
  for await (const t of gen) streamed += t.text;
  const stats = gen.stats!;
  const all = tokenizer.decode([...stats.promptIds, ...stats.tokens]);
  assert.equal(stats.promptIds[0], 1); // BOS from add_bos_token
  assert.equal(streamed, all.slice(tokenizer.decode(stats.promptIds).length));
  assert.equal(stats.text, streamed);
  assert.ok(streamed.length > 0);
});

Deno.test("a seed reproduces a sampled generation; another seed gives another one", async () => {
  const opts = {
    temperature: 5,
    topK: 0,
    topP: 1,
    maxNewTokens: 12,
    ignoreEos: true,
  };
  const a = await generate(target(), [1], { ...opts, seed: 42 }).done();
  const b = await generate(target(), [1], { ...opts, seed: 42 }).done();
  const c = await generate(target(), [1], { ...opts, seed: 43 }).done();
  assert.deepEqual(a.tokens, b.tokens);
  assert.notDeepEqual(a.tokens, c.tokens);
  assert.equal(a.seed, 42);
  // without a seed one is drawn and reported, so the run can be repeated
  const d = await generate(target(), [1], opts).done();
  const e = await generate(target(), [1], { ...opts, seed: d.seed }).done();
  assert.deepEqual(d.tokens, e.tokens);
});

Deno.test("generate() refuses a prompt longer than the context and a budget past it, before running", () => {
  const t = target({ contextLength: 8 });
  assert.throws(
    () => generate(t, [1, 2, 3, 4, 5, 6, 7, 8, 9], { maxNewTokens: 1 }),
    /^RangeError: the prompt is 9 tokens, longer than the model's context of 8 tokens$/,
  );
  assert.throws(
    () => generate(t, [1, 2, 3], { maxNewTokens: 6 }),
    /^RangeError: 3 prompt tokens \+ 6 new tokens = 9 is past the model's context of 8 tokens \(at most 5 new tokens fit\)$/,
  );
  assert.throws(() => generate(t, [], {}), /the prompt is empty/);
  assert.throws(
    () => generate(t, [1, 5000], {}),
    /token id 5000 in the prompt is outside the vocabulary \(0\.\.2047\)/,
  );
  assert.throws(() => generate(t, [1], { maxNewTokens: 0 }), /max new tokens/);
  assert.throws(() => generate(t, [1], { topP: 0 }), /top-p/);
  assert.equal(t.engine.calls.length, 0);
});

Deno.test("without a tokenizer, token ids generate and text prompts name the missing file", async () => {
  const t = target({ tokenizer: noTokenizer });
  const stats = await generate(t, [1], { temperature: 0, maxNewTokens: 2 })
    .done();
  assert.deepEqual(stats.tokens, [300, 301]);
  assert.equal(stats.text, "");
  assert.throws(
    () => generate(t, "Once upon a time"),
    /no tokenizer: .*tokenizer\.json is missing/,
  );
});
