// The WebGPU engine against the CPU engine on the same Module tree: greedy
// tokens identical and logits close (measured gaps ≤ 2e-6 of the logit
// scale, the bound 2e-5), on every family fixture, on TinyStories-656K float
// and quantized (every scheme, symmetric and with zero points), and with the
// weight splitting and prefill chunking paths forced.
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadCausalLM, Quantizer } from "../mod.ts";
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
import { adapter, ignore, probe } from "./_webgpu_harness.ts";
import { runCli } from "./_checkpoint_fixtures.ts";

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
        assert.ok(gap <= 2e-5, `${name}: max |Δlogit| ${gap} of the scale`);
        const gen = await greedy(gpu, ids, want.length - ids.length);
        assert.deepEqual(gen, want, `${name}: greedy tokens`);
      } finally {
        gpu.dispose();
      }
    },
  });
}

const SCHEMES: [string | null, boolean][] = [
  [null, false],
  ["w8a32", true],
  ["w8a16", false],
  ["w8a16", true],
  ["w8a8", false],
  ["w8a8", true],
  ["w4a16", false],
  ["w4a16", true],
];

for (const [method, asymmetric] of SCHEMES) {
  Deno.test({
    name: `the WebGPU engine matches the CPU engine on TinyStories-656K ${
      method ?? "bf16"
    }${asymmetric ? " asymmetric" : ""}`,
    ignore,
    async fn() {
      using lm = await loadCausalLM(TINY, {
        backend: "cpu",
        contextLength: 64,
        ...(method ? { method, asymmetric } : {}),
        ...(method === "w4a16" ? { groupSize: 32 } : {}),
      });
      const gpu = await createWebGpuEngine(lm.model, {
        adapter: adapter(),
        contextLength: 64,
      });
      try {
        const gap = await logitsGap(lm.engine, gpu, IDS);
        assert.ok(gap <= 2e-5, `max |Δlogit| ${gap} of the scale`);
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

Deno.test({
  name:
    "the WebGPU engine splits weights and embeddings across bindings and chunks long prefills",
  ignore,
  async fn() {
    using lm = await loadCausalLM(TINY, { backend: "cpu", contextLength: 64 });
    // 16 KiB bindings: the 2048 × 128 bf16 embedding (512 KiB) and tied head
    // split into 32+ chunks, every projection into several; prefill plans of
    // 5 rows, so 11 tokens take three plans and the cache carries over.
    const gpu = await createWebGpuEngine(lm.model, {
      adapter: adapter(),
      contextLength: 64,
      maxBindingBytes: 16384,
      prefillChunk: 5,
    });
    try {
      const gap = await logitsGap(lm.engine, gpu, IDS);
      assert.ok(gap <= 2e-5, `max |Δlogit| ${gap} of the scale`);
      assert.deepEqual(
        await greedy(gpu, IDS, 6),
        await greedy(lm.engine, IDS, 6),
      );
    } finally {
      gpu.dispose();
    }
  },
});

Deno.test({
  name:
    "the WebGPU engine samples the CPU engine's tokens at temperature, top-k and top-p",
  ignore,
  async fn() {
    using lm = await loadCausalLM(TINY, { backend: "cpu", contextLength: 64 });
    const gpu = await createWebGpuEngine(lm.model, {
      adapter: adapter(),
      contextLength: 64,
    });
    try {
      const settings = [
        { temperature: 1, topK: 0, topP: 1 },
        { temperature: 0.8, topK: 40, topP: 0.95 },
        { temperature: 1.5, topK: 5, topP: 0.6 },
      ];
      for (const sampler of settings) {
        for (const u of [0.05, 0.4, 0.93]) {
          lm.engine.reset();
          gpu.reset();
          const want = await lm.engine.stepAndSample(IDS, 0, sampler, u);
          const got = await gpu.stepAndSample(IDS, 0, sampler, u);
          assert.equal(got, want, `${JSON.stringify(sampler)} u ${u}`);
        }
      }
    } finally {
      gpu.dispose();
    }
  },
});

Deno.test({
  name:
    "the WebGPU engine picks up layers a Quantizer swaps in after it was made",
  ignore,
  async fn() {
    using lm = await loadCausalLM(TINY, { backend: "cpu", contextLength: 64 });
    const gpu = await createWebGpuEngine(lm.model, {
      adapter: adapter(),
      contextLength: 64,
    });
    try {
      const before = await gpu.step(IDS, 0, "last");
      // q | k | v and gate | up are one matmul each, and decode attention
      // does RoPE and the cache append: per block norm, qkv, attention, o,
      // add + norm, gate·up, glu, down; then embedding, final norm, head,
      // sampling.
      assert.equal(gpu.stats().dispatchesPerToken, 1 + 2 * 8 + 3);
      // Layer 0's k and up stay float: its q, k, v run as three matmuls and
      // its gate, up as two (3 dispatches more).
      await new Quantizer(lm.model).quantize("w8a16", [
        "lm_head",
        "model.layers.0.self_attn.k_proj",
        "model.layers.0.mlp.up_proj",
      ]);
      gpu.reset();
      lm.engine.reset();
      const after = await gpu.step(IDS, 0, "last");
      const cpu = await lm.engine.step(IDS, 0, "last");
      assert.ok(maxAbsDiff(after, before) > 0, "the quantized layers run");
      assert.ok(maxAbsDiff(after, cpu) <= 1e-4 * absMax(cpu));
      assert.equal(gpu.stats().dispatchesPerToken, 1 + 2 * 8 + 3 + 3);
    } finally {
      gpu.dispose();
    }
  },
});

Deno.test({
  name:
    "the WebGPU engine rejects steps past its context and gaps in the cache, as the CPU engine",
  ignore,
  async fn() {
    using lm = await loadCausalLM(TINY, { backend: "cpu", contextLength: 8 });
    const gpu = await createWebGpuEngine(lm.model, {
      adapter: adapter(),
      contextLength: 8,
    });
    try {
      for (const e of [lm.engine, gpu]) {
        await assert.rejects(e.step(IDS, 0, "last"), {
          message: "Positions [0, 11) do not fit the context of 8 tokens",
        });
        await assert.rejects(e.step([1], 3, "last"), {
          message:
            "step() at position 3, but the cache holds positions [0, 0): steps must continue it",
        });
        await assert.rejects(e.step([5000], 0, "last"), {
          message: "Token id 5000 is out of range: the table has 2048 rows",
        });
      }
      gpu.dispose();
      await assert.rejects(gpu.step([1], 0, "last"), {
        message: "The WebGPU engine was disposed",
      });
    } finally {
      gpu.dispose();
    }
  },
});

Deno.test({
  name:
    "the WebGPU engine's greedy run-ahead gives the CPU engine's ids when the caller feeds other tokens",
  ignore,
  async fn() {
    using lm = await loadCausalLM(TINY, { backend: "cpu", contextLength: 64 });
    const gpu = await createWebGpuEngine(lm.model, {
      adapter: adapter(),
      contextLength: 64,
    });
    try {
      const g = { temperature: 0, topK: 0, topP: 1 };
      // Greedy for a while (the GPU runs 1, 2, 4, 8 steps ahead), then force
      // a token the model did not pick, then greedy again, then a step back.
      const feed = async (e: Engine) => {
        e.reset();
        const out: number[] = [];
        let t = await e.stepAndSample(IDS, 0, g, 0);
        for (let p = IDS.length; p < IDS.length + 20; p++) {
          out.push(t);
          const input = p === IDS.length + 9 ? (t + 1) % 2048 : t;
          t = await e.stepAndSample([input], p, g, 0);
        }
        out.push(t, await e.stepAndSample([7], IDS.length + 5, g, 0));
        return out;
      };
      assert.deepEqual(await feed(gpu), await feed(lm.engine));
    } finally {
      gpu.dispose();
    }
  },
});

Deno.test({
  name: 'backend "auto" declines a software adapter and runs the CPU engine',
  ignore: ignore || !probe.isFallback,
  async fn() {
    using lm = await loadCausalLM(TINY, { contextLength: 16 });
    assert.equal(lm.engine.name, "cpu");
  },
});

Deno.test({
  name:
    "tinyq generate --backend webgpu gives the CPU engine's greedy and seeded tokens",
  ignore,
  async fn() {
    const run = async (backend: string, sampling: string[]) => {
      const r = await runCli([
        "generate",
        TINY,
        "-p",
        "Once upon a time",
        "-n",
        "24",
        ...sampling,
        "--backend",
        backend,
        "--json",
      ]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout);
    };
    for (const sampling of [["--temperature", "0"], ["--seed", "5"]]) {
      const [gpu, cpu] = [
        await run("webgpu", sampling),
        await run("cpu", sampling),
      ];
      assert.equal(gpu.backend, "webgpu");
      assert.deepEqual(gpu.tokens, cpu.tokens, sampling.join(" "));
      assert.equal(gpu.text, cpu.text);
    }
  },
});

Deno.test({
  name:
    "the WebGPU engine on core WGSL only (int8 by shifts, no dot4) matches the CPU engine",
  ignore,
  async fn() {
    for (const method of ["w8a16", "w8a8"]) {
      using lm = await loadCausalLM(TINY, {
        backend: "cpu",
        contextLength: 64,
        method,
      });
      const gpu = await createWebGpuEngine(lm.model, {
        adapter: adapter(),
        contextLength: 64,
        disableDot4: true,
      });
      try {
        const gap = await logitsGap(lm.engine, gpu, IDS);
        assert.ok(gap <= 2e-5, `${method}: max |Δlogit| ${gap} of the scale`);
      } finally {
        gpu.dispose();
      }
    }
  },
});
