// A quantized model's logits equal the float runtime's on its dequantized
// weights (f32 tolerance), for every scheme quantized at load and for every
// stored layout the loader reads (TinyQ native, compressed-tensors, quanto).
import assert from "node:assert/strict";
import { join } from "node:path";
import { findFormat, loadCausalLM, quantizeCheckpoint } from "../mod.ts";
import {
  absMax,
  familyFixtures,
  maxAbsDiff,
  MODELS_DIR,
} from "./_model_reference.ts";
import { Linear, W8A16LinearLayer } from "../mod.ts";
import { useDequantizedWeights } from "./_dequantized_model.ts";

const TINY = join(import.meta.dirname!, "..", "models", "tinystories-656k");
const IDS = [1, 80, 147, 201, 282, 57, 403, 407];

async function checkAgainstDequantized(
  source: string,
  options: Parameters<typeof loadCausalLM>[1],
  quantizedFrom: string = source,
  expectLayers = 14, // TinyStories: 2 blocks × 7 projections (the tied head stays float)
): Promise<void> {
  using q = await loadCausalLM(quantizedFrom, options);
  using f = await loadCausalLM(source);
  const layers = useDequantizedWeights(q, f);
  assert.equal(layers, expectLayers, "layers quantized");
  const ids = IDS.map((id) => id % f.config.vocabSize);
  const a = await q.logits(ids);
  const b = await f.logits(ids);
  const err = maxAbsDiff(a, b);
  // W8A16 returns bf16: where the two f32 sums straddle a bf16 rounding
  // boundary one activation moves by a bf16 ulp (2⁻⁸ relative), and that
  // propagates; every other scheme is held to f32 accuracy.
  const bf16Out = [...q.model.namedModules()].some(([, m]) =>
    m instanceof W8A16LinearLayer
  );
  const tol = (bf16Out ? 1e-2 : 1e-5) * absMax(b);
  assert.ok(err <= tol, `max |Δlogit| ${err} > ${tol}`);
}

for (const method of ["w8a32", "w8a16", "w8a8", "w4a16"]) {
  for (const asymmetric of [false, true]) {
    Deno.test(
      `loadCausalLM({ method: "${method}"${
        asymmetric ? ", asymmetric" : ""
      } }) matches the float runtime on its dequantized weights`,
      async () => {
        await checkAgainstDequantized(TINY, {
          method,
          asymmetric,
          ...(method === "w4a16" ? { groupSize: 32 } : {}),
        });
      },
    );
  }
}

// Every (format, method, zero points) the writers support.
const STORED: [string, string, boolean][] = [
  ["tinyq", "w8a32", false],
  ["tinyq", "w8a16", true],
  ["tinyq", "w8a8", false],
  ["tinyq", "w4a16", true],
  ["compressed-tensors", "w8a16", false],
  ["compressed-tensors", "w8a8", false],
  ["compressed-tensors", "w4a16", false],
  ["compressed-tensors", "w4a16", true],
  ["quanto", "w8a16", false],
];

for (const [format, method, asymmetric] of STORED) {
  Deno.test(
    `a ${format} ${method}${
      asymmetric ? " asymmetric" : ""
    } checkpoint runs in its stored form and matches its dequantized weights`,
    async () => {
      const dir = await Deno.makeTempDir();
      try {
        await quantizeCheckpoint(TINY, join(dir, "q"), {
          method: method as "w8a16",
          asymmetric,
          format: findFormat(format)!,
          ...(method === "w4a16" ? { groupSize: 64 } : {}),
        });
        await checkAgainstDequantized(TINY, {}, join(dir, "q"));
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}

Deno.test("quantizing at load leaves an excluded lm_head and the tied head in float", async () => {
  using lm = await loadCausalLM(TINY, { method: "w8a16", exclude: ["o_proj"] });
  const names = [...lm.model.namedModules()].map(([p, m]) =>
    `${p}:${m.typeName()}`
  );
  assert.ok(names.includes("model.layers.1.self_attn.o_proj:Linear"));
  assert.ok(names.includes("model.layers.1.self_attn.q_proj:W8A16LinearLayer"));
  assert.ok(names.includes("lm_head:Linear"));
});

for (const name of familyFixtures()) {
  for (const method of ["w8a16", "w8a8"]) {
    Deno.test(`the ${name} fixture quantized to ${method} at load matches its dequantized weights`, async () => {
      const dir = join(MODELS_DIR, name);
      using f = await loadCausalLM(dir);
      const linears = [...f.model.namedModules()].filter(([, m]) =>
        m instanceof Linear
      ).length;
      await checkAgainstDequantized(dir, { method }, dir, linears);
    });
  }
}
