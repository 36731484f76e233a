// Prints, per family fixture and TinyStories-656K scheme, the WebGPU
// engine's largest logit difference from the CPU engine (relative to the
// logit scale) and whether greedy tokens agree: the figures of issue 12's
// closing note.   deno run -A tools/webgpu_parity_report.ts
import { join } from "node:path";
import { loadCausalLM } from "../mod.ts";
import { createWebGpuEngine } from "../src/models/webgpu_engine.ts";
import { probeWebGpu } from "../src/backend/webgpu.ts";
import {
  absMax,
  familyFixtures,
  greedy,
  maxAbsDiff,
  MODELS_DIR,
  readReference,
} from "../tests/_model_reference.ts";

const probe = await probeWebGpu();
if (!probe.adapter) throw new Error(`No WebGPU adapter: ${probe.description}`);
console.log(`adapter ${probe.description}`);
const TINY = join(import.meta.dirname!, "..", "models", "tinystories-656k");
const cases: [string, string, Record<string, unknown>, number[] | null][] = [];
for (const name of familyFixtures()) {
  const ref = join(MODELS_DIR, name, "reference.safetensors");
  const ids = (await readReference(ref, "input_ids")).data as number[];
  cases.push([name, join(MODELS_DIR, name), {}, ids]);
}
for (const method of ["", "w8a16", "w8a8", "w4a16"]) {
  cases.push([
    `tinystories ${method || "bf16"}`,
    TINY,
    method ? { method, ...(method === "w4a16" ? { groupSize: 32 } : {}) } : {},
    null,
  ]);
}
for (const [name, dir, opts, given] of cases) {
  using lm = await loadCausalLM(dir, {
    backend: "cpu",
    contextLength: 64,
    ...opts,
  });
  const gpu = await createWebGpuEngine(lm.model, {
    adapter: probe.adapter,
    contextLength: 64,
  });
  const ids = given ?? [1, 80, 147, 201, 282, 57, 403, 407, 9, 1000, 33];
  const want = await lm.engine.step(ids, 0, "all");
  const got = await gpu.step(ids, 0, "all");
  lm.engine.reset();
  gpu.reset();
  const a = await greedy(lm.engine, ids, 8), b = await greedy(gpu, ids, 8);
  const same = a.every((t, i) => t === b[i]);
  console.log(
    `${name.padEnd(20)} max |Δlogit| / scale ${
      (maxAbsDiff(got, want) / absMax(want)).toExponential(2)
    }  greedy ${
      same ? "identical" : "DIFFERENT"
    }  dispatches/token ${gpu.stats().dispatchesPerToken}`,
  );
  gpu.dispose();
}
