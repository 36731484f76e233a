// Prints, for TinyStories-656K and every family fixture, how far the CPU
// runtime's logits are from Hugging Face transformers' (max |Δ| and that
// over the logit scale), whether greedy decoding agrees, and how far KV-cache
// decoding is from a full recompute.
//   deno run -A tools/model_parity_report.ts
import { join } from "node:path";
import { loadCausalLM } from "../mod.ts";
import {
  absMax,
  familyFixtures,
  greedy,
  maxAbsDiff,
  MODELS_DIR,
  readReference,
} from "../tests/_model_reference.ts";

const TINY = join(import.meta.dirname!, "..", "models", "tinystories-656k");
const rows: string[] = [
  "| fixture | max abs Δlogit | / logit scale | greedy | KV cache max abs Δ |",
  "|---|---|---|---|---|",
];
const cases: [string, string, string, string, string][] = [
  [
    "tinystories-656k",
    TINY,
    join(MODELS_DIR, "tinystories-reference.safetensors"),
    "long_prompt",
    "prompt_ids",
  ],
  ...familyFixtures().map((n): [string, string, string, string, string] => [
    n,
    join(MODELS_DIR, n),
    join(MODELS_DIR, n, "reference.safetensors"),
    "",
    "input_ids",
  ]),
];
for (const [name, dir, ref, prefix, greedyPrompt] of cases) {
  const ids = (await readReference(ref, prefix ? `${prefix}_ids` : "input_ids"))
    .data as number[];
  const want =
    (await readReference(ref, prefix ? `${prefix}_logits` : "logits"))
      .data as Float32Array;
  const gPrompt = (await readReference(ref, greedyPrompt)).data as number[];
  const gWant = (await readReference(ref, "greedy_ids")).data as number[];
  using lm = await loadCausalLM(dir, { backend: "cpu" });
  const got = await lm.logits(ids);
  const err = maxAbsDiff(got, want);
  const gen = await greedy(lm.engine, gPrompt, gWant.length - gPrompt.length);
  const e = lm.engine;
  e.reset();
  const inc = new Float32Array(got.length);
  inc.set(await e.step(ids.slice(0, 1), 0, "all"), 0);
  for (let p = 1; p < ids.length; p++) {
    inc.set(await e.step([ids[p]!], p, "last"), p * lm.config.vocabSize);
  }
  e.reset();
  rows.push(
    `| ${name} | ${err.toExponential(2)} | ${
      (err / absMax(want)).toExponential(2)
    } | ${
      JSON.stringify(gen) === JSON.stringify(gWant) ? "same" : "DIFFERS"
    } | ${maxAbsDiff(inc, got).toExponential(2)} |`,
  );
}
console.log(rows.join("\n"));
