// A quantized model's logits equal the float runtime's on its dequantized
// weights (f32 tolerance), for every scheme quantized at load and for every
// stored layout the loader reads (TinyQ native, compressed-tensors, quanto).
import assert from "node:assert/strict";
import { join } from "node:path";
import { findFormat, loadCausalLM, quantizeCheckpoint } from "../mod.ts";
import { absMax, maxAbsDiff } from "./_model_reference.ts";
import { useDequantizedWeights } from "./_dequantized_model.ts";

const TINY = join(import.meta.dirname!, "..", "models", "tinystories-656k");
const IDS = [1, 80, 147, 201, 282, 57, 403, 407];

async function checkAgainstDequantized(
  source: string,
  options: Parameters<typeof loadCausalLM>[1],
  quantizedFrom: string = source,
): Promise<void> {
  using q = await loadCausalLM(quantizedFrom, options);
  using f = await loadCausalLM(source);
  const layers = useDequantizedWeights(q, f);
  assert.equal(layers, 14, "2 blocks × 7 projections quantized");
  const a = await q.logits(IDS);
  const b = await f.logits(IDS);
  const err = maxAbsDiff(a, b);
  assert.ok(err <= 1e-5 * absMax(b), `max |Δlogit| ${err}`);
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
