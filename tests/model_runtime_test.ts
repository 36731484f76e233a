// The runtime's own contracts: KV-cache decoding equals recomputing the
// sequence, PyTorch-style printing, and one clear error for each kind of
// bad input.
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  buildDecoderModel,
  Checkpoint,
  loadCausalLM,
  MissingTokenizerError,
  ModelConfigError,
  ModelWeightsError,
  Module,
  parseModelConfig,
  Tensor,
} from "../mod.ts";
import {
  absMax,
  familyFixtures,
  maxAbsDiff,
  MODELS_DIR,
} from "./_model_reference.ts";

const TINY = join(import.meta.dirname!, "..", "models", "tinystories-656k");

for (const name of ["tinystories-656k", ...familyFixtures()]) {
  Deno.test(`${name}: decoding with the KV cache gives the logits of a full recompute`, async () => {
    const dir = name === "tinystories-656k" ? TINY : join(MODELS_DIR, name);
    using lm = await loadCausalLM(dir, { backend: "cpu" });
    const v = lm.config.vocabSize;
    const ids = Array.from({ length: 12 }, (_, i) => (i * 7 + 3) % v);
    const full = await lm.logits(ids);
    const e = lm.engine;
    e.reset();
    // A 5-token prefill, a 3-token chunk, then one token at a time.
    const parts = [
      await e.step(ids.slice(0, 5), 0, "all"),
      await e.step(ids.slice(5, 8), 5, "all"),
    ];
    for (let p = 8; p < ids.length; p++) {
      parts.push(await e.step([ids[p]!], p, "last"));
    }
    const inc = new Float32Array(full.length);
    let o = 0;
    for (const part of parts) {
      inc.set(part, o);
      o += part.length;
    }
    const err = maxAbsDiff(inc, full);
    assert.ok(err <= 1e-5 * absMax(full), `max |Δlogit| ${err}`);
    // Rewinding to an earlier position recomputes from there.
    const again = await e.step([ids[4]!], 4, "last");
    assert.ok(
      maxAbsDiff(again, full.subarray(4 * v, 5 * v)) <= 1e-5 * absMax(full),
    );
  });
}

Deno.test("String(model) prints the PyTorch tree, before and after quantizing", async () => {
  using lm = await loadCausalLM(TINY);
  const float = String(lm.model);
  assert.equal(Deno.inspect(lm.model), float);
  assert.equal(
    float,
    `LlamaForCausalLM(
  (model): LlamaModel(
    (embed_tokens): Embedding(2048, 128)
    (layers): ModuleList(
      (0-1): 2 x LlamaDecoderLayer(
        (self_attn): LlamaAttention(
          (q_proj): Linear(in_features=128, out_features=128, bias=False)
          (k_proj): Linear(in_features=128, out_features=64, bias=False)
          (v_proj): Linear(in_features=128, out_features=64, bias=False)
          (o_proj): Linear(in_features=128, out_features=128, bias=False)
        )
        (mlp): LlamaMLP(
          act_fn=silu
          (gate_proj): Linear(in_features=128, out_features=384, bias=False)
          (up_proj): Linear(in_features=128, out_features=384, bias=False)
          (down_proj): Linear(in_features=384, out_features=128, bias=False)
        )
        (input_layernorm): LlamaRMSNorm((128,), eps=1e-06)
        (post_attention_layernorm): LlamaRMSNorm((128,), eps=1e-06)
      )
    )
    (norm): LlamaRMSNorm((128,), eps=1e-06)
    (rotary_emb): LlamaRotaryEmbedding()
  )
  (lm_head): Linear(in_features=128, out_features=2048, bias=False, tied=model.embed_tokens.weight)
)`,
  );
  const { Quantizer } = await import("../mod.ts");
  await new Quantizer(lm.model).quantize("w8a16", ["lm_head"]);
  const q = String(lm.model);
  assert.match(
    q,
    /\(q_proj\): W8A16LinearLayer\(in_features=128, out_features=128, bias=False\)/,
  );
  assert.equal(q.match(/W8A16LinearLayer/g)?.length, 7); // folded: 2 x block
});

Deno.test("the tree's tensors are exactly the checkpoint's", async () => {
  for (
    const dir of [
      TINY,
      ...familyFixtures().map((n) => join(MODELS_DIR, n)),
    ]
  ) {
    using lm = await loadCausalLM(dir);
    using ckpt = await Checkpoint.open(dir);
    assert.deepEqual(
      [...lm.model.namedTensors()].map(([n]) => n).sort(),
      ckpt.entries.map((e) => e.name).filter((n) =>
        !/\.attn\.(masked_)?bias$/.test(n)
      ).sort(),
      dir,
    );
  }
});

Deno.test("an unknown model_type is one error naming it and the supported list", async () => {
  assert.throws(
    () => parseModelConfig({ model_type: "bert" }),
    {
      name: "ModelConfigError",
      message:
        'model_type "bert" is not supported; supported: llama, mistral, qwen2, gemma, gemma2, phi3, gpt2, opt, codegen',
    },
  );
  const dir = await Deno.makeTempDir();
  try {
    await Deno.copyFile(
      join(TINY, "model.safetensors"),
      join(dir, "model.safetensors"),
    );
    await Deno.writeTextFile(
      join(dir, "config.json"),
      JSON.stringify({
        model_type: "mamba",
        architectures: ["MambaForCausalLM"],
      }),
    );
    await assert.rejects(loadCausalLM(dir), {
      name: "ModelConfigError",
      message:
        `${join(dir, "config.json")}: model_type "mamba" is not supported; ` +
        "supported: llama, mistral, qwen2, gemma, gemma2, phi3, gpt2, opt, codegen",
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an unsupported scheme is refused before anything loads", async () => {
  await assert.rejects(loadCausalLM(TINY, { method: "w2a2" }), {
    message:
      'Unknown quantization method "w2a2"; known methods: w8a32, w8a16, w8a8, w4a16',
  });
});

Deno.test("a missing tensor is named", async () => {
  using ckpt = await Checkpoint.open(TINY);
  const raw = await ckpt.toModule();
  raw.getModule("model.layers.1")!.getChild("input_layernorm")!.deleteTensor(
    "weight",
  );
  const config = parseModelConfig(ckpt.config);
  assert.throws(() => buildDecoderModel(config, raw, TINY), {
    name: "ModelWeightsError",
    message:
      `${TINY}: tensor "model.layers.1.input_layernorm.weight" is missing`,
  });
  // An untied model without its head, and a head of the wrong shape.
  const llama = join(MODELS_DIR, "llama");
  using untied = await Checkpoint.open(llama);
  const c = parseModelConfig(untied.config);
  const noHead = await untied.toModule();
  noHead.setChild("lm_head", new Module());
  assert.throws(() => buildDecoderModel(c, noHead, llama), {
    message: `${llama}: tensor "lm_head.weight" is missing`,
  });
  const wide = await untied.toModule();
  assert.throws(
    () => buildDecoderModel({ ...c, vocabSize: 97 }, wide, llama),
    {
      message:
        `${llama}: tensor "model.embed_tokens.weight" must be [97, 48] for this config, got [96, 48]`,
    },
  );
  assert.ok(new ModelWeightsError("x") instanceof Error);
  assert.ok(new ModelConfigError("x") instanceof Error);
});

Deno.test("NaN logits are an error naming the position", async () => {
  using lm = await loadCausalLM(TINY);
  const norm = lm.model.getModule("model.norm")!;
  const w = new Float32Array(128).fill(1);
  w[5] = NaN;
  norm.setTensor("weight", new Tensor(w, [128]));
  await assert.rejects(lm.logits([1, 403]), {
    message:
      "The model produced NaN logits at position 0 (token 0): its weights or activations are not finite",
  });
});

Deno.test("a folder without a tokenizer loads for token ids; text says what is missing", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const f of ["config.json", "model.safetensors"]) {
      await Deno.copyFile(join(TINY, f), join(dir, f));
    }
    using lm = await loadCausalLM(dir);
    assert.equal(lm.tokenizer.available, false);
    assert.equal((await lm.logits([1, 403])).length, 2 * 2048);
    assert.throws(() => lm.tokenizer.encode("Once"), {
      name: "MissingTokenizerError",
      message: `no tokenizer: ${
        join(dir, "tokenizer.json")
      } is missing (text needs it; token ids work without it)`,
    });
    assert.ok(MissingTokenizerError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("steps past the context, gaps in positions and bad ids are refused", async () => {
  using lm = await loadCausalLM(TINY, { contextLength: 8 });
  const e = lm.engine;
  await assert.rejects(e.step(Array(9).fill(1), 0, "last"), {
    name: "RangeError",
    message: "Positions [0, 9) do not fit the context of 8 tokens",
  });
  await e.step([1, 2], 0, "last");
  await assert.rejects(e.step([3], 5, "last"), {
    message:
      "step() at position 5, but the cache holds positions [0, 2): steps must continue it",
  });
  await assert.rejects(e.step([2048], 2, "last"), {
    message: "Token id 2048 is out of range: the table has 2048 rows",
  });
  await assert.rejects(e.step([], 0, "last"), {
    message: "step() needs at least one token",
  });
});
