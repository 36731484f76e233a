// The export formats end to end: `tinyq quantize --format …` through the real
// CLI entry point, the files read back with an independent reading of the
// safetensors header and of each format's spec (words unpacked with shifts,
// scales decoded from raw bf16/f16 bits), then `inspect`, `dequantize`,
// `eval` and `Quantizer.loadModel` on what was written, and checkpoints in
// those formats that another tool wrote (no TinyQ metadata).

import assert from "node:assert/strict";
import { join } from "node:path";
import { makeDemoCheckpoint } from "../src/demo/demo_checkpoint.ts";
import { Checkpoint } from "../src/io/checkpoint.ts";
import { saveModule } from "../src/io/save_module.ts";
import { SafetensorsFile, writeSafetensors } from "../src/io/safetensors.ts";
import { compressedTensorsFormat } from "../src/io/formats/compressed_tensors.ts";
import { compressedTensorsConfig } from "../src/io/formats/compressed_tensors_config.ts";
import { quantoQmap } from "../src/io/formats/quanto.ts";
import { Linear } from "../src/linear.ts";
import { Quantizer } from "../src/quantizer.ts";
import { formatNotes } from "../src/cli/quantize.ts";
import { W8A16LinearLayer } from "../src/quant/w8a16_linear_layer.ts";
import {
  quantizeOk,
  runMain,
  snapshot,
  withDir,
  writeFamily,
} from "./_checkpoint_fixtures.ts";

// ---------------------------------------------------------------------------
// Independent readers: the safetensors header as its spec defines it, and the
// value encodings the formats' specs name.

interface Raw {
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

interface RawCheckpoint {
  tensors: Map<string, Raw>;
  metadata: Record<string, string>[];
}

/** Every tensor of every `.safetensors` file in `dir`, from the raw bytes. */
async function readRaw(dir: string): Promise<RawCheckpoint> {
  const tensors = new Map<string, Raw>();
  const metadata: Record<string, string>[] = [];
  const names = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name.endsWith(".safetensors")) names.push(e.name);
  }
  for (const name of names.sort()) {
    const raw = await Deno.readFile(join(dir, name));
    const n = Number(
      new DataView(raw.buffer, raw.byteOffset).getBigUint64(0, true),
    );
    const header = JSON.parse(new TextDecoder().decode(raw.subarray(8, 8 + n)));
    metadata.push(header.__metadata__ ?? {});
    for (const [k, v] of Object.entries(header)) {
      if (k === "__metadata__") continue;
      const { dtype, shape, data_offsets: [b, e] } = v as {
        dtype: string;
        shape: number[];
        data_offsets: [number, number];
      };
      tensors.set(k, { dtype, shape, bytes: raw.slice(8 + n + b, 8 + n + e) });
    }
  }
  return { tensors, metadata };
}

function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function int8s(t: Raw): number[] {
  return [...new Int8Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.length)];
}

/** Float values of a raw F32/F16/BF16 tensor. */
function floats(t: Raw): number[] {
  const v = dv(t.bytes);
  const size = t.dtype === "F32" ? 4 : 2;
  return Array.from({ length: t.bytes.length / size }, (_, i) => {
    if (t.dtype === "F32") return v.getFloat32(i * 4, true);
    if (t.dtype === "F16") return v.getFloat16(i * 2, true);
    if (t.dtype === "BF16") {
      return new DataView(
        new Uint32Array([v.getUint16(i * 2, true) << 16]).buffer,
      )
        .getFloat32(0, true);
    }
    throw new Error(`not a float dtype: ${t.dtype}`);
  });
}

/** f32 → bf16 → number, round to nearest even, by integer arithmetic. */
function bf16Round(x: number): number {
  const bits = new Uint32Array(new Float32Array([x]).buffer)[0]!;
  let upper = bits >>> 16;
  const lower = bits & 0xffff;
  if (lower > 0x8000 || (lower === 0x8000 && (upper & 1) === 1)) upper++;
  return new Float32Array(new Uint32Array([upper << 16]).buffer)[0]!;
}

function roundTo(x: number, dtype: string): number {
  return dtype === "BF16"
    ? bf16Round(x)
    : dtype === "F16"
    ? Math.f16round(x)
    : Math.fround(x);
}

/** compressed-tensors' pack-quantized words → int8 values, per its docstring. */
function unpackWords(t: Raw, out: number, inF: number): number[] {
  const words = Math.ceil(inF / 4);
  const v = dv(t.bytes);
  const q: number[] = [];
  for (let r = 0; r < out; r++) {
    for (let c = 0; c < inF; c++) {
      const word = v.getUint32((r * words + (c >> 2)) * 4, true);
      q.push(((word >>> (8 * (c % 4))) & 0xff) - 128);
    }
  }
  return q;
}

function i64s(t: Raw): number[] {
  return Array.from(
    { length: t.bytes.length / 8 },
    (_, i) => Number(dv(t.bytes).getBigInt64(i * 8, true)),
  );
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// ---------------------------------------------------------------------------
// Running the CLI

async function ok(args: string[]) {
  const r = await runMain(args);
  assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
  return r;
}

/** The demo Llama: every shape odd for Marlin (hidden 16, mlp 40, vocab 32). */
async function demo(dir: string): Promise<string> {
  const model = join(dir, "model");
  await makeDemoCheckpoint(model, { layers: 1, hidden: 16, vocab: 32 });
  return model;
}

async function config(dir: string): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
}

/**
 * For each quantized module of a tinyq output: its int8 values, f32 scales
 * and shape, read raw.
 */
function tinyqLayers(
  raw: RawCheckpoint,
): Map<string, { q: number[]; scales: number[]; out: number; inF: number }> {
  const layers = new Map();
  for (const [name, t] of raw.tensors) {
    if (!name.endsWith(".int8_weights")) continue;
    const path = name.slice(0, -".int8_weights".length);
    const s = raw.tensors.get(`${path}.scales`)!;
    assert.equal(s.dtype, "F32");
    layers.set(path, {
      q: int8s(t),
      scales: floats(s),
      out: t.shape[0]!,
      inF: t.shape[1]!,
    });
  }
  return layers;
}

/** Tensors the float input and an output share must be byte-identical. */
function assertPassThrough(
  input: RawCheckpoint,
  output: RawCheckpoint,
  quantized: readonly string[],
): void {
  const q = new Set(quantized.map((p) => `${p}.weight`));
  for (const [name, t] of input.tensors) {
    if (q.has(name)) {
      assert.ok(!output.tensors.has(name), `${name} must be replaced`);
      continue;
    }
    const o = output.tensors.get(name);
    assert.ok(o, `${name} must pass through`);
    assert.equal(o.dtype, t.dtype, name);
    assert.deepEqual(o.shape, t.shape, name);
    assert.ok(sameBytes(o.bytes, t.bytes), `${name}: bytes differ`);
  }
}

// ---------------------------------------------------------------------------
// compressed-tensors

Deno.test("quantize --format compressed-tensors writes pack-quantized words that unpack to TinyQ's int8 values", async () => {
  await withDir(async (dir) => {
    const model = await demo(dir);
    const skip = ["--exclude", "model.layers.0.self_attn.k_proj"];
    await quantizeOk(model, join(dir, "tq"), ...skip);
    const r = await quantizeOk(
      model,
      join(dir, "ct"),
      "--format",
      "compressed-tensors",
      ...skip,
      "--force-mixed",
    );
    assert.match(r.stdout, /\(compressed-tensors format\)/);

    const input = await readRaw(model);
    const tq = tinyqLayers(await readRaw(join(dir, "tq")));
    const ct = await readRaw(join(dir, "ct"));
    const modules = [...tq.keys()].filter((p) => p !== "lm_head");
    assert.equal(modules.length, 6);
    for (const p of modules) {
      const { q, scales, out, inF } = tq.get(p)!;
      const packed = ct.tensors.get(`${p}.weight_packed`)!;
      assert.equal(packed.dtype, "I32", p);
      assert.deepEqual(packed.shape, [out, Math.ceil(inF / 4)], p);
      assert.deepEqual(unpackWords(packed, out, inF), q, p);
      const scale = ct.tensors.get(`${p}.weight_scale`)!;
      assert.deepEqual([scale.dtype, scale.shape], ["BF16", [out, 1]], p);
      assert.deepEqual(floats(scale), scales.map(bf16Round), p);
      const shape = ct.tensors.get(`${p}.weight_shape`)!;
      assert.deepEqual([shape.dtype, shape.shape], ["I64", [2]], p);
      assert.deepEqual(i64s(shape), [out, inF], p);
    }
    assertPassThrough(input, ct, modules);
    assert.equal(
      ct.tensors.size,
      input.tensors.size + 2 * modules.length,
      "three tensors per quantized Linear, nothing else added",
    );
    for (const m of ct.metadata) assert.equal(m.format, "pt");
  });
});

Deno.test("quantize --format compressed-tensors: config block for vLLM, ignore lists every float Linear, warnings on stderr and in --json", async () => {
  await withDir(async (dir) => {
    const model = await demo(dir);
    const out = join(dir, "ct");
    const r = await quantizeOk(
      model,
      out,
      "--format",
      "compressed-tensors",
      "--exclude",
      "model.layers.0.self_attn.k_proj",
      "--force-mixed",
      "--json",
    );
    const qc = (await config(out)).quantization_config as Record<
      string,
      unknown
    >;
    assert.equal(qc.quant_method, "compressed-tensors");
    assert.equal(qc.format, "pack-quantized");
    assert.equal(qc.quantization_status, "compressed");
    assert.deepEqual([...(qc.ignore as string[])].sort(), [
      "lm_head",
      "model.layers.0.self_attn.k_proj",
    ]);
    const group = (qc.config_groups as Record<string, Record<string, unknown>>)
      .group_0!;
    assert.deepEqual(group.targets, ["Linear"]);
    assert.equal(group.input_activations, null);
    const w = group.weights as Record<string, unknown>;
    assert.deepEqual(
      [w.num_bits, w.type, w.symmetric, w.strategy, w.group_size, w.dynamic],
      [8, "int", true, "channel", null, false],
    );
    // The rest of config.json is the input's.
    const { quantization_config: _, ...rest } = await config(out);
    assert.deepEqual(rest, await config(model));

    // lm_head stays float (vLLM loads it unquantized), with a note.
    assert.match(
      r.stderr,
      /^tinyq: note: lm_head stays in float \(compressed-tensors: vLLM loads lm_head unquantized/m,
    );
    assert.match(
      r.stderr,
      /^tinyq: warning: model\.layers\.0\.self_attn: q_proj, v_proj quantized but k_proj in float; vLLM fuses q_proj\/k_proj\/v_proj/m,
    );
    // Six quantized layers, none with Marlin's shape (out % 64, in % 128).
    const marlin = r.stderr.match(/^tinyq: warning: .*Marlin.*$/gm) ?? [];
    assert.equal(marlin.length, 6);
    assert.match(
      r.stderr,
      /warning: model\.layers\.0\.mlp\.down_proj \[16, 40\]: out 16 is not a multiple of 64 and in 40 is not a multiple of 128/,
    );
    const json = JSON.parse(r.stdout);
    assert.equal(json.format, "compressed-tensors");
    assert.deepEqual(json.keptFloat.map((k: { path: string }) => k.path), [
      "lm_head",
    ]);
    assert.equal(json.warnings.length, 7);
    assert.ok(json.excluded.includes("lm_head"));
    assert.ok(!json.quantized.includes("lm_head"));
  });
});

Deno.test("quantize --format compressed-tensors warns about nothing when every shape suits Marlin", async () => {
  await withDir(async (dir) => {
    const model = join(dir, "model");
    await makeDemoCheckpoint(model, {
      layers: 1,
      hidden: 128,
      intermediate: 256,
      vocab: 32,
    });
    const r = await quantizeOk(
      model,
      join(dir, "ct"),
      "--format",
      "compressed-tensors",
    );
    assert.equal(
      r.stderr,
      "tinyq: note: lm_head stays in float (compressed-tensors: vLLM loads lm_head unquantized and has no parameter for lm_head.weight_packed)\n",
    );
    const i = await ok(["inspect", join(dir, "ct")]);
    assert.doesNotMatch(i.stdout, /warning/);
  });
});

Deno.test("quantize --format compressed-tensors on GPT-2 stores Conv1D layers in Linear orientation with f16 scales", async () => {
  await withDir(async (dir) => {
    const model = join(dir, "gpt2");
    const f = await writeFamily(model, "gpt2", { dtype: "f16" });
    await quantizeOk(model, join(dir, "tq"));
    await quantizeOk(model, join(dir, "ct"), "--format", "compressed-tensors");
    const tq = tinyqLayers(await readRaw(join(dir, "tq")));
    const ct = await readRaw(join(dir, "ct"));
    const input = await readRaw(model);
    assert.deepEqual([...tq.keys()].sort(), [...f.linear].sort());
    for (const p of f.linear) {
      const { q, scales, out, inF } = tq.get(p)!;
      // Conv1D stores [in, out]; the export is [out, in] like every Linear.
      assert.deepEqual(input.tensors.get(`${p}.weight`)!.shape, [inF, out]);
      const packed = ct.tensors.get(`${p}.weight_packed`)!;
      assert.deepEqual(packed.shape, [out, Math.ceil(inF / 4)]);
      assert.deepEqual(unpackWords(packed, out, inF), q, p);
      const scale = ct.tensors.get(`${p}.weight_scale`)!;
      assert.equal(scale.dtype, "F16");
      assert.deepEqual(floats(scale), scales.map((s) => Math.f16round(s)), p);
      assert.deepEqual(i64s(ct.tensors.get(`${p}.weight_shape`)!), [out, inF]);
    }
    assertPassThrough(input, ct, f.linear);
  });
});

// ---------------------------------------------------------------------------
// optimum-quanto

Deno.test("quantize --format quanto writes weight._data, weight._scale, unit activation scales and quanto_qmap.json", async () => {
  await withDir(async (dir) => {
    const model = await demo(dir);
    // No tie_word_embeddings: transformers' default (true) applies, so a
    // quantized lm_head must be untied as quanto's save_pretrained does.
    const cfg = await config(model);
    delete cfg.tie_word_embeddings;
    await Deno.writeTextFile(join(model, "config.json"), JSON.stringify(cfg));
    await quantizeOk(model, join(dir, "tq"));
    const r = await quantizeOk(model, join(dir, "qt"), "--format", "quanto");
    assert.equal(r.stderr, "");
    const tq = tinyqLayers(await readRaw(join(dir, "tq")));
    const qt = await readRaw(join(dir, "qt"));
    const input = await readRaw(model);
    const modules = [...tq.keys()];
    assert.equal(modules.length, 8);
    for (const p of modules) {
      const { q, scales, out, inF } = tq.get(p)!;
      const data = qt.tensors.get(`${p}.weight._data`)!;
      assert.deepEqual([data.dtype, data.shape], ["I8", [out, inF]], p);
      assert.deepEqual(int8s(data), q, p);
      const scale = qt.tensors.get(`${p}.weight._scale`)!;
      assert.deepEqual([scale.dtype, scale.shape], ["BF16", [out, 1]], p);
      assert.deepEqual(floats(scale), scales.map(bf16Round), p);
      for (const a of ["input_scale", "output_scale"]) {
        const t = qt.tensors.get(`${p}.${a}`)!;
        assert.deepEqual([t.dtype, t.shape, floats(t)], ["BF16", [], [1]], a);
      }
    }
    assertPassThrough(input, qt, modules);
    const qmap = JSON.parse(
      await Deno.readTextFile(join(dir, "qt", "quanto_qmap.json")),
    );
    assert.deepEqual(
      qmap,
      Object.fromEntries(
        modules.map((m) => [m, { weights: "qint8", activations: "none" }]),
      ),
    );
    // No quantization_config (quanto writes none); lm_head untied.
    assert.deepEqual(await config(join(dir, "qt")), {
      ...cfg,
      tie_word_embeddings: false,
    });

    // lm_head left in float: nothing to untie, config.json as it was.
    await quantizeOk(
      model,
      join(dir, "qt2"),
      "--format",
      "quanto",
      "--exclude",
      "lm_head",
    );
    assert.deepEqual(await config(join(dir, "qt2")), cfg);
    const qmap2 = JSON.parse(
      await Deno.readTextFile(join(dir, "qt2", "quanto_qmap.json")),
    );
    assert.equal(qmap2.lm_head, undefined);
    assert.equal(Object.keys(qmap2).length, 7);
  });
});

Deno.test("quantize --format quanto keeps GPT-2's Conv1D layers in float, as quanto swaps only nn.Linear", async () => {
  await withDir(async (dir) => {
    const model = join(dir, "gpt2");
    const f = await writeFamily(model, "gpt2");
    const r = await quantizeOk(
      model,
      join(dir, "qt"),
      "--format",
      "quanto",
      "--json",
    );
    const notes = r.stderr.match(/^tinyq: note: .*$/gm) ?? [];
    assert.deepEqual(
      notes.map((l) => l.split(" ")[2]).sort(),
      [...f.linear].sort(),
    );
    assert.match(
      notes[0]!,
      /quanto: GPT-2 Conv1D layer: optimum-quanto quantizes only torch\.nn\.Linear/,
    );
    const json = JSON.parse(r.stdout);
    assert.deepEqual(json.quantized, []);
    assert.deepEqual([...json.excluded].sort(), [...f.linear].sort());
    const input = await readRaw(model);
    const qt = await readRaw(join(dir, "qt"));
    assertPassThrough(input, qt, []);
    assert.equal(qt.tensors.size, input.tensors.size);
    assert.deepEqual(
      JSON.parse(await Deno.readTextFile(join(dir, "qt", "quanto_qmap.json"))),
      {},
    );
  });
});

// ---------------------------------------------------------------------------
// Reading back: dequantize, inspect, eval, Quantizer.loadModel

/** Checks a dequantized export against TinyQ's int8 values and scales. */
function assertDequantized(
  back: RawCheckpoint,
  tq: ReturnType<typeof tinyqLayers>,
  modules: readonly string[],
  scaleDtype: string,
  transposed: readonly string[] = [],
): void {
  for (const p of modules) {
    const { q, scales, out, inF } = tq.get(p)!;
    const w = back.tensors.get(`${p}.weight`)!;
    const t = transposed.includes(p);
    assert.deepEqual([w.dtype, w.shape], ["F32", t ? [inF, out] : [out, inF]]);
    const got = floats(w);
    for (let r = 0; r < out; r++) {
      // The scale as stored in the export, times q, rounded once to f32.
      const s = roundTo(scales[r]!, scaleDtype);
      for (let c = 0; c < inF; c++) {
        const want = Math.fround(q[r * inF + c]! * s);
        const at = t ? c * out + r : r * inF + c;
        if (got[at] !== want) {
          assert.fail(`${p}[${r}, ${c}]: ${got[at]} != ${want}`);
        }
      }
    }
  }
}

Deno.test("dequantize round-trips all three formats to TinyQ's floats, up to the scale's dtype", async () => {
  await withDir(async (dir) => {
    const model = await demo(dir);
    await quantizeOk(model, join(dir, "tq"));
    const tqRaw = await readRaw(join(dir, "tq"));
    const tq = tinyqLayers(tqRaw);
    const all = [...tq.keys()];
    const input = await readRaw(model);
    for (
      const [format, scaleDtype, modules] of [
        ["tinyq", "F32", all],
        ["compressed-tensors", "BF16", all.filter((p) => p !== "lm_head")],
        ["quanto", "BF16", all],
      ] as const
    ) {
      const q = join(dir, `q-${format}`);
      const back = join(dir, `back-${format}`);
      if (format !== "tinyq") {
        await quantizeOk(model, q, "--format", format);
      }
      const r = await ok([
        "dequantize",
        format === "tinyq" ? join(dir, "tq") : q,
        "--out",
        back,
        "--dtype",
        "f32",
        "--json",
      ]);
      assert.deepEqual(
        [...JSON.parse(r.stdout).dequantized].sort(),
        [...modules].sort(),
        format,
      );
      const raw = await readRaw(back);
      assertDequantized(raw, tq, modules, scaleDtype);
      // Everything else is the input's, names and bytes.
      assert.deepEqual(
        [...raw.tensors.keys()].sort(),
        [...input.tensors.keys()].sort(),
      );
      // --dtype f32: every other float tensor converted, exactly (bf16 ⊂ f32).
      for (const [name, t] of input.tensors) {
        if (modules.includes(name.replace(/\.weight$/, ""))) continue;
        const got = raw.tensors.get(name)!;
        assert.equal(got.dtype, "F32", name);
        assert.deepEqual(floats(got), floats(t), name);
      }
      for (const m of raw.metadata) {
        assert.deepEqual(
          Object.keys(m),
          ["format", "dequantized_by"],
          `${format}: metadata`,
        );
        assert.match(m.dequantized_by!, /^tinyq \d+\.\d+\.\d+$/);
      }
      const files = [...(await snapshot(back)).keys()];
      assert.ok(!files.includes("quanto_qmap.json"), format);
      assert.deepEqual(
        await config(back),
        { ...await config(model), torch_dtype: "float32" },
        format,
      );
    }
    // Without --dtype the weights come back in the original dtype (bf16).
    await ok([
      "dequantize",
      join(dir, "q-compressed-tensors"),
      "--out",
      join(dir, "b16"),
    ]);
    const b16 = await readRaw(join(dir, "b16"));
    const up = b16.tensors.get("model.layers.0.mlp.up_proj.weight")!;
    assert.equal(up.dtype, "BF16");
    // compressed-tensors' decompressor multiplies bf16(q) by the bf16 scale
    // in bf16: one rounding of the exact product, the same values.
    const { q, scales, inF } = tq.get("model.layers.0.mlp.up_proj")!;
    assert.deepEqual(
      floats(up),
      q.map((v, i) => bf16Round(v * bf16Round(scales[Math.floor(i / inF)]!))),
    );
  });
});

Deno.test("dequantize restores GPT-2's Conv1D weights to [in, out] from compressed-tensors", async () => {
  await withDir(async (dir) => {
    const model = join(dir, "gpt2");
    const f = await writeFamily(model, "gpt2", { dtype: "f16" });
    await quantizeOk(model, join(dir, "tq"));
    await quantizeOk(model, join(dir, "ct"), "--format", "compressed-tensors");
    await ok([
      "dequantize",
      join(dir, "ct"),
      "--out",
      join(dir, "back"),
      "--dtype",
      "f32",
    ]);
    assertDequantized(
      await readRaw(join(dir, "back")),
      tinyqLayers(await readRaw(join(dir, "tq"))),
      f.linear,
      "F16",
      f.transposed,
    );
  });
});

Deno.test("inspect names the format and its warnings, and previews --format on a float checkpoint", async () => {
  await withDir(async (dir) => {
    const model = await demo(dir);
    let r = await ok(["inspect", model, "--format", "compressed-tensors"]);
    assert.match(
      r.stdout,
      /quantize --format compressed-tensors would convert 7 Linear weights/,
    );
    assert.match(
      r.stdout,
      /^note: lm_head would stay in float \(vLLM loads lm_head unquantized/m,
    );
    assert.match(
      r.stdout,
      /^lm_head\.weight .* exclude +vLLM loads lm_head unquantized/m,
    );
    assert.match(
      r.stdout,
      /^7 compressed-tensors warning\(s\) for that output:$/m,
    );
    assert.equal((r.stdout.match(/^warning: .*Marlin/gm) ?? []).length, 7);
    const j = JSON.parse(
      (await ok(["inspect", model, "--format", "compressed-tensors", "--json"]))
        .stdout,
    );
    assert.equal(j.format, "compressed-tensors");
    assert.deepEqual(j.keptFloat.map((k: { path: string }) => k.path), [
      "lm_head",
    ]);
    assert.equal(j.warnings.length, 7);
    assert.equal(j.summary.quantize, 7);
    // Sizes as the format stores them: i32 words, bf16 scales, i64 shape.
    const up = 40 * 4 * 4 + 40 * 2 + 16;
    assert.ok(j.summary.linearBytesAfter > up);

    r = await ok(["inspect", model]);
    assert.doesNotMatch(r.stdout, /warning/);
    assert.match(
      r.stdout,
      /\nquantize would convert 8 Linear weights/,
    );

    await quantizeOk(model, join(dir, "ct"), "--format", "compressed-tensors");
    r = await ok(["inspect", join(dir, "ct")]);
    assert.match(
      r.stdout,
      /^format: +compressed-tensors\nquantization: tinyq \d+\.\d+\.\d+, w8a16, 8-bit per-channel symmetric, activations f16\/bf16, 7 modules quantized, 1 excluded \(lm_head\), original weights bf16$/m,
    );
    assert.match(
      r.stdout,
      /^model\.layers\.0\.mlp\.up_proj\.weight_packed +I32 +\[40, 4\] .* quantized +quantized \(compressed-tensors w8a16\)$/m,
    );
    assert.match(r.stdout, /^7 compressed-tensors warning\(s\):$/m);
    const jq = JSON.parse(
      (await ok(["inspect", join(dir, "ct"), "--json"])).stdout,
    );
    assert.equal(jq.format, "compressed-tensors");
    assert.equal(jq.quantization.modules.length, 7);
    assert.equal(jq.warnings.length, 7);

    await quantizeOk(model, join(dir, "qt"), "--format", "quanto");
    r = await ok([
      "inspect",
      join(dir, "qt"),
      "--format",
      "compressed-tensors",
    ]);
    assert.match(r.stdout, /^format: +quanto\nquantization: tinyq /m);
    assert.match(
      r.stdout,
      /^model\.layers\.0\.mlp\.up_proj\.weight\._data +I8 +\[40, 16\] .* quantized /m,
    );
    assert.match(
      r.stdout,
      /^note: --format compressed-tensors ignored: this checkpoint is already in quanto format$/m,
    );

    const bad = await runMain(["inspect", model, "--format", "gguf"]);
    assert.equal(bad.code, 2);
    assert.match(
      bad.stderr,
      /^tinyq inspect: unknown --format "gguf"; known formats: tinyq, compressed-tensors, quanto/,
    );
  });
});

Deno.test("eval compares compressed-tensors and quanto exports with the float original", async () => {
  await withDir(async (dir) => {
    const model = await demo(dir);
    for (const format of ["compressed-tensors", "quanto"]) {
      const q = join(dir, format);
      await quantizeOk(model, q, "--format", format);
      const r = await ok(["eval", model, q, "--json"]);
      const j = JSON.parse(r.stdout);
      assert.equal(j.layers.length, format === "quanto" ? 8 : 7, format);
      assert.notEqual(j.verdict, "fail", format);
      for (const l of j.layers) assert.ok(l.weight.snrDb > 30, l.path);
    }
  });
});

Deno.test("Quantizer.loadModel reads every format back as W8A16 layers holding TinyQ's int8 values", async () => {
  await withDir(async (dir) => {
    const model = await demo(dir);
    await quantizeOk(model, join(dir, "tq"));
    const tq = tinyqLayers(await readRaw(join(dir, "tq")));
    for (const format of ["tinyq", "compressed-tensors", "quanto"]) {
      const q = join(dir, format === "tinyq" ? "tq" : format);
      if (format !== "tinyq") {
        await quantizeOk(model, q, "--format", format);
      }
      const quantizer = new Quantizer();
      try {
        const m = await quantizer.loadModel(q);
        for (const [p, want] of tq) {
          const layer = m.getModule(p);
          if (format === "compressed-tensors" && p === "lm_head") {
            assert.ok(layer instanceof Linear, "lm_head stays a float Linear");
            continue;
          }
          assert.ok(layer instanceof W8A16LinearLayer, `${format}: ${p}`);
          assert.deepEqual(
            [...layer.int8Weights.data],
            want.q,
            `${format}: ${p}`,
          );
          assert.deepEqual(
            [...layer.scales.data],
            want.scales.map((s) => format === "tinyq" ? s : bf16Round(s)),
          );
          assert.deepEqual(layer.int8Weights.shape, [want.out, want.inF]);
        }
        // The float tensors are there as lazy tensors, by their own names.
        assert.ok(
          m.getModule("model.layers.0.input_layernorm")?.getTensor("weight"),
        );
        assert.equal(
          m.getModule("model.layers.0.mlp.up_proj.weight"),
          undefined,
        );
      } finally {
        quantizer.close();
      }
    }
  });
});

Deno.test("saveModule() with compressedTensorsFormat writes the CLI's bytes, and refuses a quantized lm_head", async () => {
  await withDir(async (dir) => {
    const model = await demo(dir);
    await quantizeOk(model, join(dir, "cli"), "--format", "compressed-tensors");
    {
      using ckpt = await Checkpoint.open(model);
      const m = await ckpt.toModule();
      const quantizer = new Quantizer(m);
      await quantizer.quantize("w8a16", ["lm_head"]);
      const r = await saveModule(m, join(dir, "lib"), {
        method: "w8a16",
        excluded: quantizer.report!.excluded,
        source: ckpt,
        format: compressedTensorsFormat,
      });
      assert.equal(r.warnings.length, 7);
    }
    const a = await snapshot(join(dir, "cli"));
    const b = await snapshot(join(dir, "lib"));
    assert.deepEqual([...a.keys()], [...b.keys()]);
    for (const [k, v] of a) assert.ok(sameBytes(v, b.get(k)!), k);

    using ckpt = await Checkpoint.open(model);
    const m = await ckpt.toModule();
    await new Quantizer(m).quantize("w8a16");
    await assert.rejects(
      saveModule(m, join(dir, "lib2"), {
        method: "w8a16",
        source: ckpt,
        format: compressedTensorsFormat,
      }),
      /lm_head.*--format compressed-tensors cannot hold this layer quantized \(vLLM loads lm_head unquantized/,
    );
    await assert.rejects(Deno.stat(join(dir, "lib2")), Deno.errors.NotFound);
  });
});

// ---------------------------------------------------------------------------
// Checkpoints another tool wrote

/** Rewrites every shard of `dir` without the `tinyq` metadata entry. */
async function stripTinyqMetadata(dir: string): Promise<void> {
  for await (const e of Deno.readDir(dir)) {
    if (!e.name.endsWith(".safetensors")) continue;
    const path = join(dir, e.name);
    const f = await SafetensorsFile.open(path);
    const entries = [];
    for (const t of f.tensors) {
      const bytes = await f.readBytes(t.name);
      entries.push({
        name: t.name,
        dtype: t.dtype,
        shape: t.shape,
        byteLength: bytes.byteLength,
        bytes: () => bytes,
      });
    }
    const { tinyq: _, ...meta } = f.metadata ?? {};
    f.close();
    await writeSafetensors(path, entries, meta);
  }
}

Deno.test("checkpoints compressed-tensors or quanto wrote (no TinyQ metadata) are recognised and dequantize to the same floats", async () => {
  await withDir(async (dir) => {
    const model = await demo(dir);
    for (const format of ["compressed-tensors", "quanto"]) {
      const ours = join(dir, format);
      const theirs = join(dir, `${format}-foreign`);
      await quantizeOk(model, ours, "--format", format);
      await quantizeOk(model, theirs, "--format", format);
      await stripTinyqMetadata(theirs);
      {
        using a = await Checkpoint.open(ours);
        using b = await Checkpoint.open(theirs);
        assert.equal(b.format?.name, format);
        assert.equal(
          b.quantization?.library,
          format === "quanto" ? "optimum-quanto" : "compressed-tensors",
        );
        assert.deepEqual(
          [...b.quantization!.modules].sort(),
          [...a.quantization!.modules].sort(),
        );
        assert.equal(b.quantization?.weightDtype, "bf16");
        for (const p of a.quantization!.modules) {
          assert.deepEqual(b.quantizedShape(p), a.quantizedShape(p), p);
        }
        if (format === "compressed-tensors") {
          assert.deepEqual(b.quantization?.excluded, ["lm_head"]);
        }
      }
      const i = await ok(["inspect", theirs]);
      assert.match(
        i.stdout,
        new RegExp(
          `^format: +${format}\nquantization: ${
            format === "quanto" ? "optimum-quanto" : "compressed-tensors"
          } `,
          "m",
        ),
      );
      await ok([
        "dequantize",
        ours,
        "--out",
        join(dir, `${format}-a`),
        "--dtype",
        "f32",
      ]);
      await ok([
        "dequantize",
        theirs,
        "--out",
        join(dir, `${format}-b`),
        "--dtype",
        "f32",
      ]);
      // The same tensors, bytes and side files (the shards' headers differ
      // only in where the writer put things).
      const ra = await readRaw(join(dir, `${format}-a`));
      const rb = await readRaw(join(dir, `${format}-b`));
      assert.deepEqual(
        [...ra.tensors.keys()].sort(),
        [...rb.tensors.keys()].sort(),
      );
      for (const [n, t] of ra.tensors) {
        assert.ok(sameBytes(t.bytes, rb.tensors.get(n)!.bytes), n);
      }
      const a = await snapshot(join(dir, `${format}-a`));
      const b = await snapshot(join(dir, `${format}-b`));
      assert.deepEqual([...a.keys()], [...b.keys()]);
      for (const [k, v] of a) {
        if (!k.endsWith(".safetensors")) assert.ok(sameBytes(v, b.get(k)!), k);
      }
    }

    // A quanto map naming a module without qint8 data is refused, naming the map.
    const theirs = join(dir, "quanto-foreign");
    const qmap = JSON.parse(
      await Deno.readTextFile(join(theirs, "quanto_qmap.json")),
    );
    qmap["model.layers.0.mlp.nothing"] = {
      weights: "qint8",
      activations: "none",
    };
    await Deno.writeTextFile(
      join(theirs, "quanto_qmap.json"),
      JSON.stringify(qmap),
    );
    const r = await runMain(["inspect", theirs]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /quanto_qmap\.json.*maps "model\.layers\.0\.mlp\.nothing" to qint8, but the checkpoint has no "model\.layers\.0\.mlp\.nothing\.weight\._data"/,
    );
  });
});

// ---------------------------------------------------------------------------
// What the export formats refuse

Deno.test("export formats refuse what int8 weight-only per-channel cannot record", async () => {
  const base = {
    library: "tinyq",
    version: "0.1.0",
    method: "w8a16",
    bits: 8,
    granularity: "per-channel",
    symmetric: true,
    modules: ["fc"],
    excluded: [],
    transposed: [],
  };
  // Float activations are fine (W8A16, W8A32).
  compressedTensorsConfig({ ...base, activations: "f16/bf16" });
  quantoQmap({ ...base, method: "w8a32", activations: "f32" });
  // W8A8 is int-quantized; vLLM's int8 kernels take symmetric weights only.
  compressedTensorsConfig({
    ...base,
    method: "w8a8",
    activations: "int8 dynamic per-token",
  });
  assert.throws(
    () =>
      compressedTensorsConfig({
        ...base,
        method: "w8a8",
        symmetric: false,
        activations: "int8 dynamic per-token",
      }),
    /--format compressed-tensors writes W8A8 with symmetric per-channel int8 weights \(what vLLM's int8 kernels take\); drop --asymmetric/,
  );
  assert.throws(
    () =>
      quantoQmap({
        ...base,
        method: "w8a8",
        activations: "int8 dynamic per-token",
      }),
    /--format quanto writes weight-only int8 \(W8A16\); --method w8a8 also quantizes activations/,
  );
  assert.throws(
    () =>
      quantoQmap({ ...base, bits: 4, granularity: "group", groupSize: 128 }),
    /--format quanto writes 8-bit symmetric per-channel weights; this checkpoint is 4-bit symmetric group-wise \(group size 128\)/,
  );
  await withDir(async (dir) => {
    const model = await demo(dir);
    const out = join(dir, "ct");
    const r = await runMain([
      "quantize",
      model,
      "--out",
      out,
      "--method",
      "w8a16",
      "--asymmetric",
      "--format",
      "compressed-tensors",
    ]);
    // An impossible flag pair is a usage error (issue 14), found before
    // the input is opened.
    assert.equal(r.code, 2);
    assert.equal(
      r.stderr,
      "tinyq quantize: the compressed-tensors format does not store w8a16 8-bit asymmetric weights (see tinyq quantize --help)\n",
    );
    await assert.rejects(Deno.stat(out), Deno.errors.NotFound);
    // W8A32 keeps float activations: the same file as W8A16 bar the method.
    await quantizeOk(
      model,
      out,
      "--method",
      "w8a32",
      "--format",
      "compressed-tensors",
    );
  });
});

Deno.test("formatNotes() prints the kept-float notes and at most nine warning lines", () => {
  const warnings = Array.from({ length: 12 }, (_, i) => ({
    path: `l${i}`,
    message: `l${i} is odd`,
  }));
  const text = formatNotes({
    format: "compressed-tensors",
    keptFloat: [{ path: "lm_head", reason: "why" }],
    warnings,
  });
  assert.deepEqual(text.split("\n").slice(0, 2), [
    "tinyq: note: lm_head stays in float (compressed-tensors: why)",
    "tinyq: warning: l0 is odd",
  ]);
  assert.equal((text.match(/^tinyq: warning: /gm) ?? []).length, 9);
  assert.match(
    text,
    /^tinyq: warning: … and 4 more \(all of them in --json and 'tinyq inspect <out>'\)\n$/m,
  );
  assert.equal(
    formatNotes({
      format: "quanto",
      keptFloat: [],
      warnings: warnings.slice(0, 10),
    })
      .split("\n").length - 1,
    10,
  );
});
