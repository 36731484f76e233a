import { loadCausalLM } from "./mod.ts";
import { absMax, greedy, maxAbsDiff, readReference } from "./tests/_model_reference.ts";
for (const name of Deno.args) {
  const dir = `/work/wt11f/tests/fixtures/models/${name}`;
  try {
    const ref = `${dir}/reference.safetensors`;
    const ids = (await readReference(ref, "input_ids")).data as number[];
    const want = (await readReference(ref, "logits")).data as Float32Array;
    const g = (await readReference(ref, "greedy_ids")).data as number[];
    const lm = await loadCausalLM(dir, { backend: "cpu" });
    const got = await lm.logits(ids);
    const gen = await greedy(lm.engine, ids, g.length - ids.length);
    console.log(name, "err", maxAbsDiff(got, want), "scale", absMax(want), "greedy", JSON.stringify(gen) === JSON.stringify(g));
    lm.dispose();
  } catch (e) { console.log(name, "ERROR", (e as Error).message); }
}
