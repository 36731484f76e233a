import assert from "node:assert/strict";
import { join } from "node:path";
import { Checkpoint } from "../src/io/checkpoint.ts";
import { CheckpointTensor } from "../src/io/checkpoint_tensor.ts";
import { dequantizeCheckpoint } from "../src/io/dequantize_checkpoint.ts";
import { quantizeCheckpoint } from "../src/io/quantize_checkpoint.ts";
import { saveModule } from "../src/io/save_module.ts";
import { SafetensorsFile } from "../src/io/safetensors.ts";
import { makeDemoCheckpoint } from "../src/demo/demo_checkpoint.ts";
import { quantizeRowsInt8 } from "../src/quant/quantize_rows.ts";
import { Quantizer } from "../src/quantizer.ts";
import { Linear } from "../src/linear.ts";
import { Module } from "../src/module.ts";
import { Tensor } from "../src/tensor.ts";
import { DTYPE_SIZE } from "../src/dtype.ts";
import { W8A16LinearLayer } from "../src/quant/w8a16_linear_layer.ts";
import { W8A32LinearLayer } from "../src/quant/w8a32_linear_layer.ts";
import { parseSize } from "../src/io/_sharding.ts";
import {
  FAMILY_FIXTURES,
  snapshot,
  withDir,
  writeFamily,
} from "./_checkpoint_fixtures.ts";

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((x, i) => x === b[i]);
}

/** The int8 values and scales TinyQ's math gives for a stored weight. */
async function expectedQuantization(
  ckpt: Checkpoint,
  name: string,
  transposed = false,
) {
  let t = await ckpt.read(name);
  if (transposed) {
    const [r, c] = t.shape as [number, number];
    const src = t.data as Uint16Array;
    const dst = new Uint16Array(src.length);
    for (let i = 0; i < r; i++) {
      for (let j = 0; j < c; j++) dst[j * r + i] = src[i * c + j]!;
    }
    t = new Tensor(dst, [c, r], t.dtype);
  }
  const [rows, cols] = t.shape as [number, number];
  return quantizeRowsInt8(t.data, t.dtype as "bf16", rows, cols, name);
}

for (const [family, fixture] of Object.entries(FAMILY_FIXTURES)) {
  Deno.test(`Checkpoint.linears() finds exactly the Linear layers of a ${family} checkpoint`, async () => {
    await withDir(async (dir) => {
      await writeFamily(dir, family);
      using ckpt = await Checkpoint.open(dir);
      assert.equal(
        ckpt.family,
        family === "generic" ? null : family === "gemma2" ? "gemma" : family,
      );
      assert.deepEqual(
        ckpt.linears().map((l) => l.path).sort(),
        [...fixture.linear].sort(),
      );
      assert.deepEqual(
        ckpt.linears().filter((l) => l.transposed).map((l) => l.path).sort(),
        [...(fixture.transposed ?? [])].sort(),
      );
      const plan = ckpt.plan();
      for (const p of plan) {
        const isLinearWeight = fixture.linear.some((l) =>
          p.name === `${l}.weight`
        );
        assert.equal(p.action, isLinearWeight ? "quantize" : "keep", p.name);
      }
    });
  });

  Deno.test(`quantizeCheckpoint() on ${family}: int8 weights and scales are TinyQ's math, everything else byte-identical`, async () => {
    await withDir(async (dir) => {
      await writeFamily(join(dir, "in"), family);
      const result = await quantizeCheckpoint(
        join(dir, "in"),
        join(dir, "out"),
      );
      assert.deepEqual(
        [...result.quantized].sort(),
        [...fixture.linear].sort(),
      );
      using src = await Checkpoint.open(join(dir, "in"));
      using out = await Checkpoint.open(join(dir, "out"));
      const transposed = new Set(fixture.transposed ?? []);
      for (const path of fixture.linear) {
        const want = await expectedQuantization(
          src,
          `${path}.weight`,
          transposed.has(path),
        );
        const q = await out.read(`${path}.int8_weights`);
        const s = await out.read(`${path}.scales`);
        assert.equal(q.dtype, "i8");
        assert.equal(s.dtype, "f32");
        assert.deepEqual(q.data, want.q, path);
        assert.deepEqual(s.data, want.scales, path);
        assert.equal(out.entry(`${path}.weight`), undefined);
      }
      for (const e of src.entries) {
        if (fixture.linear.some((l) => e.name === `${l}.weight`)) continue;
        const a = await src.file(e.shard).readBytes(e.name);
        const b = await out.read(e.name);
        assert.ok(
          sameBytes(a, b.bytes()),
          `${e.name} passes through byte for byte`,
        );
        assert.deepEqual(b.shape, e.info.shape);
      }
    });
  });
}

Deno.test("GPT-2 Conv1D weights are transposed on the way in and back on dequantize", async () => {
  await withDir(async (dir) => {
    await writeFamily(join(dir, "gpt2"), "gpt2");
    using src = await Checkpoint.open(join(dir, "gpt2"));
    const lazy = (await src.toModule()).getModule("h.0.attn.c_attn") as Linear;
    assert.ok(lazy instanceof Linear);
    assert.deepEqual(lazy.weight.shape, [24, 8]);
    assert.ok(
      lazy.weight instanceof CheckpointTensor && lazy.weight.transposed,
    );
    const stored = await src.read("h.0.attn.c_attn.weight");
    const loaded = await (lazy.weight as CheckpointTensor).load();
    assert.deepEqual(loaded.shape, [24, 8]);
    assert.equal(
      (loaded.data as Uint16Array)[1 * 8 + 3],
      (stored.data as Uint16Array)[3 * 24 + 1],
    );

    await quantizeCheckpoint(join(dir, "gpt2"), join(dir, "q"));
    using q = await Checkpoint.open(join(dir, "q"));
    assert.deepEqual(q.entry("h.0.attn.c_attn.int8_weights")!.info.shape, [
      24,
      8,
    ]);
    assert.deepEqual(q.entry("h.0.mlp.c_proj.int8_weights")!.info.shape, [
      8,
      32,
    ]);
    assert.deepEqual(
      [...q.quantization!.transposed].sort(),
      [...FAMILY_FIXTURES.gpt2!.transposed!].sort(),
    );

    const r = await dequantizeCheckpoint(join(dir, "q"), join(dir, "back"), {
      dtype: "f32",
    });
    assert.equal(r.dtype, "f32");
    using back = await Checkpoint.open(join(dir, "back"));
    const w = await back.read("h.0.attn.c_attn.weight");
    assert.deepEqual(w.shape, [8, 24]);
    const scales = (await q.read("h.0.attn.c_attn.scales"))
      .data as Float32Array;
    const orig = stored.toF32Array();
    const got = w.data as Float32Array;
    for (let i = 0; i < 8; i++) {
      for (let o = 0; o < 24; o++) {
        assert.ok(
          Math.abs(got[i * 24 + o]! - orig[i * 24 + o]!) <=
            scales[o]! / 2 + 1e-12,
        );
      }
    }
    assert.equal(back.quantization, null);
  });
});

Deno.test("quantizeCheckpoint() writes a correct index, config.json block, metadata and copies the other files", async () => {
  await withDir(async (dir) => {
    await makeDemoCheckpoint(join(dir, "m"), {
      layers: 2,
      hidden: 32,
      vocab: 64,
    });
    await Deno.mkdir(join(dir, "m", "original"));
    await Deno.writeTextFile(join(dir, "m", "original", "params.json"), "{}");
    await Deno.writeFile(
      join(dir, "m", "original", "consolidated.00.pth"),
      new Uint8Array(10),
    );
    const before = await snapshot(join(dir, "m"));
    const r = await quantizeCheckpoint(join(dir, "m"), join(dir, "q"), {
      exclude: ["lm_head"],
    });
    assert.deepEqual(
      await snapshot(join(dir, "m")),
      before,
      "the input is never written",
    );
    assert.deepEqual(r.shards, [
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
    ]);
    assert.deepEqual(r.copied, [
      "generation_config.json",
      "original/params.json",
      "tokenizer.json",
    ]);
    assert.deepEqual(r.skipped, [
      "original/consolidated.00.pth (weights in another file format)",
    ]);
    const files = [...(await snapshot(join(dir, "q"))).keys()];
    assert.deepEqual(files, [
      "config.json",
      "generation_config.json",
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
      "model.safetensors.index.json",
      "original/params.json",
      "tokenizer.json",
    ]);
    const index = JSON.parse(
      await Deno.readTextFile(join(dir, "q", "model.safetensors.index.json")),
    );
    let total = 0;
    const names: string[] = [];
    for (const shard of r.shards) {
      using f = await SafetensorsFile.open(join(dir, "q", shard));
      for (const t of f.tensors) {
        total += t.byteLength;
        names.push(t.name);
        assert.equal(index.weight_map[t.name], shard);
        assert.equal(
          t.byteOffset % DTYPE_SIZE[t.dtype],
          0,
          `${t.name} is aligned`,
        );
      }
      assert.equal(f.metadata!.format, "pt");
      const meta = JSON.parse(f.metadata!.quantization!);
      assert.equal(meta.library, "tinyq");
      assert.equal(meta.method, "w8a16");
      assert.equal(meta.granularity, "per-channel");
      assert.equal(meta.symmetric, true);
      assert.equal(meta.modules.length, 14);
      assert.deepEqual(meta.excluded, ["lm_head"]);
    }
    assert.equal(index.metadata.total_size, total);
    assert.equal(r.outputBytes, total);
    assert.deepEqual(Object.keys(index.weight_map).sort(), names.sort());
    const config = JSON.parse(
      await Deno.readTextFile(join(dir, "q", "config.json")),
    );
    assert.equal(config.model_type, "llama");
    assert.equal(config.quantization_config.quant_method, "tinyq");
    assert.equal(config.quantization_config.method, "w8a16");
    assert.equal(config.quantization_config.bits, 8);
    assert.deepEqual(config.quantization_config.modules_to_not_convert, [
      "lm_head",
    ]);
    assert.equal(config.quantization_config.quantized_modules.length, 14);
  });
});

Deno.test("a single .safetensors file quantizes to a single file, and a model.safetensors folder keeps no index", async () => {
  await withDir(async (dir) => {
    await makeDemoCheckpoint(join(dir, "m"), {
      layers: 1,
      hidden: 16,
      vocab: 32,
      shards: 1,
    });
    const file = join(dir, "m", "model.safetensors");
    await quantizeCheckpoint(file, join(dir, "single.safetensors"));
    using single = await Checkpoint.open(join(dir, "single.safetensors"));
    assert.equal(single.kind, "file");
    assert.equal(single.quantization!.method, "w8a16");
    assert.equal(
      single.family,
      null,
      "no config.json next to a lone file: generic rule",
    );

    await quantizeCheckpoint(join(dir, "m"), join(dir, "q"));
    const files = [...(await snapshot(join(dir, "q"))).keys()];
    assert.deepEqual(files, [
      "config.json",
      "generation_config.json",
      "model.safetensors",
      "tokenizer.json",
    ]);
    assert.ok(sameBytes(
      await Deno.readFile(join(dir, "single.safetensors")),
      await Deno.readFile(join(dir, "q", "model.safetensors")),
    ));
  });
});

Deno.test("maxShardSize re-shards the output greedily with Hugging Face names", async () => {
  await withDir(async (dir) => {
    await makeDemoCheckpoint(join(dir, "m"), {
      layers: 2,
      hidden: 32,
      vocab: 64,
    });
    const r = await quantizeCheckpoint(join(dir, "m"), join(dir, "q"), {
      maxShardSize: 8000,
    });
    assert.ok(r.shards.length > 2);
    assert.equal(
      r.shards[0],
      `model-00001-of-${String(r.shards.length).padStart(5, "0")}.safetensors`,
    );
    using q = await Checkpoint.open(join(dir, "q"));
    // 21 input tensors; each of the 15 Linear weights becomes int8_weights + scales.
    assert.equal(q.entries.length, 21 + 15);
    for (const s of r.shards) {
      using f = await SafetensorsFile.open(join(dir, "q", s));
      const bytes = f.tensors.reduce((n, t) => n + t.byteLength, 0);
      assert.ok(
        bytes <= 8000 || f.tensors.length === 1,
        `${s} holds ${bytes} bytes`,
      );
    }
    const one = await quantizeCheckpoint(join(dir, "m"), join(dir, "q1"), {
      maxShardSize: parseSize("1GB")!,
    });
    assert.deepEqual(one.shards, ["model.safetensors"]);
  });
});

Deno.test("exclude takes child names and dotted-path globs", async () => {
  await withDir(async (dir) => {
    await makeDemoCheckpoint(join(dir, "m"), {
      layers: 2,
      hidden: 16,
      vocab: 32,
    });
    const r = await quantizeCheckpoint(join(dir, "m"), join(dir, "q"), {
      exclude: ["lm_head", "model.layers.*.mlp.down_proj", "**.k_proj"],
    });
    assert.deepEqual(r.excluded, [
      "lm_head",
      "model.layers.0.mlp.down_proj",
      "model.layers.0.self_attn.k_proj",
      "model.layers.1.mlp.down_proj",
      "model.layers.1.self_attn.k_proj",
    ]);
    assert.equal(r.quantized.length, 10);
    using q = await Checkpoint.open(join(dir, "q"));
    assert.equal(q.entry("lm_head.weight")!.info.dtype, "bf16");
    assert.equal(
      q.entry("model.layers.1.mlp.down_proj.int8_weights"),
      undefined,
    );
    assert.deepEqual(q.quantization!.excluded, r.excluded);
    using m = await Checkpoint.open(join(dir, "m"));
    const plan = m.plan(["lm_head"]);
    assert.deepEqual(plan.find((p) => p.name === "lm_head.weight"), {
      name: "lm_head.weight",
      action: "exclude",
      reason: "matched --exclude",
    });
  });
});

Deno.test("a tied lm_head (no tensor of its own) is not invented", async () => {
  await withDir(async (dir) => {
    await makeDemoCheckpoint(join(dir, "m"), {
      layers: 1,
      hidden: 16,
      vocab: 32,
      tieEmbeddings: true,
    });
    using ckpt = await Checkpoint.open(join(dir, "m"));
    assert.ok(!ckpt.linears().some((l) => l.path === "lm_head"));
    const model = await ckpt.toModule();
    assert.equal(model.getChild("lm_head"), undefined);
    const r = await quantizeCheckpoint(join(dir, "m"), join(dir, "q"), {
      exclude: ["lm_head"],
    });
    assert.deepEqual(r.excluded, []);
  });
});

Deno.test("toModule() builds Linear layers over lazy tensors and plain modules for the rest", async () => {
  await withDir(async (dir) => {
    await makeDemoCheckpoint(join(dir, "m"), {
      layers: 1,
      hidden: 16,
      vocab: 32,
    });
    using ckpt = await Checkpoint.open(join(dir, "m"));
    const model = await ckpt.toModule();
    const q = model.getModule("model.layers.0.self_attn.q_proj");
    assert.ok(q instanceof Linear);
    assert.equal(q.inFeatures, 16);
    const emb = model.getModule("model.embed_tokens")!;
    assert.ok(!(emb instanceof Linear));
    assert.ok(emb.getTensor("weight") instanceof CheckpointTensor);
    assert.deepEqual(
      [...model.namedTensors()].map(([n]) => n).sort(),
      ckpt.entries.map((e) => e.name).sort(),
    );
    const x = new Tensor(new Float32Array(16).fill(1), [1, 16]);
    const y = await q.forward(x);
    const w = (await ckpt.read("model.layers.0.self_attn.q_proj.weight"))
      .toF32Array();
    let want = 0;
    for (let c = 0; c < 16; c++) want += w[c]!;
    assert.ok(Math.abs((y.data[0] as number) - want) < 1e-5);
    q.dispose();
  });
});

Deno.test("a TinyQ checkpoint loads back as quantized layers that run forward", async () => {
  await withDir(async (dir) => {
    await makeDemoCheckpoint(join(dir, "m"), {
      layers: 1,
      hidden: 16,
      vocab: 32,
    });
    await quantizeCheckpoint(join(dir, "m"), join(dir, "q"), {
      method: "w8a32",
    });
    using q = await Checkpoint.open(join(dir, "q"));
    assert.equal(
      q.alreadyQuantized(),
      "already quantized by tinyq (w8a32, 8 modules)",
    );
    const model = await q.toModule();
    const layer = model.getModule("model.layers.0.mlp.up_proj");
    assert.ok(layer instanceof W8A32LinearLayer);
    assert.deepEqual(
      layer.int8Weights.data,
      (await q.read("model.layers.0.mlp.up_proj.int8_weights")).data,
    );
    const y = await layer.forward(
      new Tensor(new Float32Array(16).fill(0.5), [1, 16]),
    );
    assert.deepEqual(y.shape, [1, layer.outFeatures]);
    layer.dispose();
  });
});

for (const method of ["w8a16", "w8a32"] as const) {
  Deno.test(`Quantizer.loadModel/quantize/saveModel (${method}) writes byte-identical files to quantizeCheckpoint()`, async () => {
    await withDir(async (dir) => {
      await makeDemoCheckpoint(join(dir, "m"), {
        layers: 2,
        hidden: 16,
        vocab: 32,
      });
      await Deno.writeTextFile(join(dir, "m", "README.md"), "# tiny\n");
      const exclude = ["lm_head", "model.layers.*.mlp.down_proj"];
      await quantizeCheckpoint(join(dir, "m"), join(dir, "cli"), {
        method,
        exclude,
      });
      const quantizer = new Quantizer();
      try {
        await quantizer.loadModel(join(dir, "m"));
        await quantizer.quantize(method, exclude);
        const layer = quantizer.getQuantizedModel().getModule(
          "model.layers.0.mlp.up_proj",
        );
        assert.ok(
          layer instanceof
            (method === "w8a16" ? W8A16LinearLayer : W8A32LinearLayer),
        );
        await quantizer.saveModel(join(dir, "lib"));
        await assert.rejects(
          quantizer.saveModel(join(dir, "lib")),
          /already exists \(use --force to replace it\)/,
        );
      } finally {
        quantizer.close();
      }
      assert.deepEqual(
        await snapshot(join(dir, "lib")),
        await snapshot(join(dir, "cli")),
      );
    });
  });
}

Deno.test("Quantizer.saveModel of GPT-2 matches the CLI path too (transposed weights)", async () => {
  await withDir(async (dir) => {
    await writeFamily(join(dir, "g"), "gpt2", { shards: 1 });
    await quantizeCheckpoint(join(dir, "g"), join(dir, "cli"));
    const quantizer = new Quantizer();
    try {
      await quantizer.loadModel(join(dir, "g"));
      await quantizer.quantize("w8a16");
      await quantizer.saveModel(join(dir, "lib"));
    } finally {
      quantizer.close();
    }
    assert.deepEqual(
      await snapshot(join(dir, "lib")),
      await snapshot(join(dir, "cli")),
    );
  });
});

Deno.test("saveModule() writes a model built in memory as model.safetensors", async () => {
  await withDir(async (dir) => {
    const model = new Module();
    const fc = new Linear(4, 2);
    fc.weight = new Tensor(
      new Float32Array([1, -1, 0.5, 0, 0.25, 0.125, -2, 1]),
      [2, 4],
    );
    model.setChild("fc", fc);
    model.setChild("head", new Linear(2, 3, { bias: false }));
    model.setTensor("step", new Tensor(new Int32Array([7]), []));
    const quantizer = new Quantizer(model);
    await quantizer.quantize("w8a16", ["head"]);
    await quantizer.saveModel(join(dir, "out"));
    using q = await Checkpoint.open(join(dir, "out"));
    assert.deepEqual(q.shardNames, ["model.safetensors"]);
    assert.deepEqual(q.quantization!.modules, ["fc"]);
    assert.deepEqual(q.quantization!.excluded, ["head"]);
    assert.deepEqual([...(await q.read("fc.int8_weights")).data], [
      127,
      -127,
      64,
      0,
      16,
      8,
      -127,
      64,
    ]);
    assert.deepEqual([...(await q.read("step")).data], [7]);
    assert.deepEqual((await q.read("head.weight")).shape, [3, 2]);
    await saveModule(model, join(dir, "one.safetensors"), { method: "w8a16" });
    using f = await Checkpoint.open(join(dir, "one.safetensors"));
    assert.equal(f.kind, "file");
  });
});

Deno.test("dequantizeCheckpoint() restores q · scale in the original dtype and drops the quantization records", async () => {
  await withDir(async (dir) => {
    await makeDemoCheckpoint(join(dir, "m"), {
      layers: 1,
      hidden: 16,
      vocab: 32,
    });
    await quantizeCheckpoint(join(dir, "m"), join(dir, "q"), {
      exclude: ["lm_head"],
    });
    const r = await dequantizeCheckpoint(join(dir, "q"), join(dir, "back"));
    assert.equal(r.dtype, "bf16");
    assert.equal(r.dequantized.length, 7);
    using q = await Checkpoint.open(join(dir, "q"));
    using back = await Checkpoint.open(join(dir, "back"));
    using orig = await Checkpoint.open(join(dir, "m"));
    assert.deepEqual(
      back.entries.map((e) => e.name).sort(),
      orig.entries.map((e) => e.name).sort(),
    );
    const layer = new W8A16LinearLayer(16, 16, { bias: false });
    layer.int8Weights = await q.read(
      "model.layers.0.self_attn.q_proj.int8_weights",
    );
    layer.scales = await q.read("model.layers.0.self_attn.q_proj.scales");
    const want = layer.dequantize().to("bf16");
    const got = await back.read("model.layers.0.self_attn.q_proj.weight");
    assert.equal(got.dtype, "bf16");
    assert.deepEqual(got.data, want.data);
    layer.dispose();
    assert.ok(sameBytes(
      (await back.read("lm_head.weight")).bytes(),
      (await orig.read("lm_head.weight")).bytes(),
    ));
    const config = JSON.parse(
      await Deno.readTextFile(join(dir, "back", "config.json")),
    );
    assert.equal(config.quantization_config, undefined);
    assert.equal(
      back.file(back.shardNames[0]!).metadata!.quantization,
      undefined,
    );
    await assert.rejects(
      dequantizeCheckpoint(join(dir, "m"), join(dir, "x")),
      {
        message: `${
          join(dir, "m")
        }: is not a TinyQ-quantized checkpoint (no quantization metadata); nothing to dequantize`,
      },
    );
  });
});

Deno.test("parseSize() reads Hugging Face sizes", () => {
  assert.equal(parseSize("5GB"), 5e9);
  assert.equal(parseSize("500MB"), 5e8);
  assert.equal(parseSize("2GiB"), 2 * 2 ** 30);
  assert.equal(parseSize("100M"), 1e8);
  assert.equal(parseSize("1048576"), 1048576);
  assert.equal(parseSize("1.5KB"), 1500);
  assert.equal(parseSize("0"), undefined);
  assert.equal(parseSize("-1GB"), undefined);
  assert.equal(parseSize("5 parsecs"), undefined);
});
