// The runtime against Hugging Face transformers: logits within 1e-4 of the
// logit scale and identical greedy tokens, for TinyStories-656K and a small
// random checkpoint of every family fixture (tools/make_model_fixtures.py).
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadCausalLM } from "../mod.ts";
import {
  absMax,
  familyFixtures,
  greedy,
  maxAbsDiff,
  MODELS_DIR,
  readReference,
} from "./_model_reference.ts";

const TINY = join(import.meta.dirname!, "..", "models", "tinystories-656k");

for (const name of familyFixtures()) {
  Deno.test(`the ${name} fixture's logits and greedy tokens match transformers`, async () => {
    const dir = join(MODELS_DIR, name);
    const ref = join(dir, "reference.safetensors");
    const ids = (await readReference(ref, "input_ids")).data as number[];
    const want = (await readReference(ref, "logits")).data as Float32Array;
    const greedyIds = (await readReference(ref, "greedy_ids")).data as number[];
    using lm = await loadCausalLM(dir, { backend: "cpu" });
    const got = await lm.logits(ids);
    const scale = absMax(want);
    const err = maxAbsDiff(got, want);
    assert.ok(
      err <= 1e-4 * scale,
      `${name}: max |Δlogit| ${err} > 1e-4 × ${scale}`,
    );
    const gen = await greedy(lm.engine, ids, greedyIds.length - ids.length);
    assert.deepEqual(gen, greedyIds);
  });
}

Deno.test("TinyStories-656K's logits and greedy story match transformers", async () => {
  const ref = join(MODELS_DIR, "tinystories-reference.safetensors");
  using lm = await loadCausalLM(TINY, { backend: "cpu" });
  for (const what of ["prompt", "long_prompt"]) {
    const ids = (await readReference(ref, `${what}_ids`)).data as number[];
    const want = (await readReference(ref, `${what}_logits`))
      .data as Float32Array;
    const got = await lm.logits(ids);
    const scale = absMax(want);
    const err = maxAbsDiff(got, want);
    assert.ok(
      err <= 1e-4 * scale,
      `${what}: max |Δlogit| ${err} > 1e-4 × ${scale}`,
    );
  }
  const prompt = (await readReference(ref, "prompt_ids")).data as number[];
  const story = (await readReference(ref, "greedy_ids")).data as number[];
  const gen = await greedy(lm.engine, prompt, story.length - prompt.length);
  assert.deepEqual(gen, story);
  const json = JSON.parse(
    await Deno.readTextFile(join(MODELS_DIR, "tinystories-reference.json")),
  );
  assert.equal(
    lm.tokenizer.decode(gen.slice(prompt.length), { skipSpecial: true }),
    json.greedy_new_text,
  );
});

Deno.test("TinyStories-656K's per-token NLL on the paragraph matches transformers (ppl ≈ 16.9)", async () => {
  const ref = join(MODELS_DIR, "tinystories-reference.safetensors");
  const ids = (await readReference(ref, "paragraph_ids")).data as number[];
  const want = (await readReference(ref, "paragraph_token_nll"))
    .data as Float32Array;
  using lm = await loadCausalLM(TINY, { backend: "cpu" });
  const logits = await lm.logits(ids);
  const v = lm.config.vocabSize;
  let sum = 0, worst = 0;
  for (let i = 0; i + 1 < ids.length; i++) {
    const row = logits.subarray(i * v, (i + 1) * v);
    let max = -Infinity;
    for (const x of row) max = Math.max(max, x);
    let z = 0;
    for (const x of row) z += Math.exp(x - max);
    const nll = max + Math.log(z) - row[ids[i + 1]!]!;
    worst = Math.max(worst, Math.abs(nll - want[i]!));
    sum += nll;
  }
  assert.ok(worst < 1e-4, `max |ΔNLL| ${worst}`);
  const json = JSON.parse(
    await Deno.readTextFile(join(MODELS_DIR, "tinystories-reference.json")),
  );
  const ppl = Math.exp(sum / (ids.length - 1));
  assert.ok(
    Math.abs(ppl - json.paragraph.ppl) < 1e-4 * json.paragraph.ppl,
    `ppl ${ppl}`,
  );
});
