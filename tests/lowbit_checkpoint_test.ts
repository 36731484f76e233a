// Issue 8 end to end: W8A8, W4A16 and asymmetric weights through the
// checkpoint writer, the CLI and the library, checked against the stored
// bytes decoded here independently of the code under test.

import assert from "node:assert/strict";
import { join } from "node:path";
import fc from "fast-check";
import { makeDemoCheckpoint } from "../src/demo/demo_checkpoint.ts";
import { writeSyntheticCheckpoint } from "../src/demo/demo_checkpoint.ts";
import { Checkpoint } from "../src/io/checkpoint.ts";
import { dequantizeCheckpoint } from "../src/io/dequantize_checkpoint.ts";
import { quantizeCheckpoint } from "../src/io/quantize_checkpoint.ts";
import { saveModule } from "../src/io/save_module.ts";
import { SafetensorsFile } from "../src/io/safetensors.ts";
import { Linear } from "../src/linear.ts";
import { Module } from "../src/module.ts";
import { Tensor } from "../src/tensor.ts";
import { quantizeInt4 } from "../src/quant/int4.ts";
import { linearQAsymmetricPerChannel } from "../src/quant/math.ts";
import { Quantizer } from "../src/quantizer.ts";
import { quantizeRowsInt8Asymmetric } from "../src/quant/quantize_rows_asymmetric.ts";
import { W4A16LinearLayer } from "../src/quant/w4a16_linear_layer.ts";
import { W8A16LinearLayer } from "../src/quant/w8a16_linear_layer.ts";
import { W8A32LinearLayer } from "../src/quant/w8a32_linear_layer.ts";
import { W8A8LinearLayer } from "../src/quant/w8a8_linear_layer.ts";
import { parseScheme } from "../src/cli/eval_schemes.ts";
import { findFormat } from "../src/io/formats/registry.ts";
import { detectCompressedTensors } from "../src/io/formats/compressed_tensors_config.ts";
import {
  quantizeOk,
  runMain,
  snapshot,
  withDir,
} from "./_checkpoint_fixtures.ts";

// ------------------------------------------------------ independent spec

const f = Math.fround;

/** Round half to even, written out. */
function rhe(x: number): number {
  const fl = Math.floor(x);
  const d = x - fl;
  if (d > 0.5) return fl + 1;
  if (d < 0.5) return fl;
  return fl % 2 === 0 ? fl : fl + 1;
}

const clamp = (v: number, lo: number, hi: number) =>
  Math.min(hi, Math.max(lo, v));

/** Issue 8's 4-bit spec ([min, max] widened to 0), one row. */
function specInt4Row(
  w: ArrayLike<number>,
  group: number,
  asymmetric: boolean,
): { codes: number[]; scales: number[]; zps: number[] } {
  const codes: number[] = [], scales: number[] = [], zps: number[] = [];
  for (let g = 0; g < w.length / group; g++) {
    const vals = Array.from({ length: group }, (_, i) => w[g * group + i]!);
    const min = Math.min(0, ...vals), max = Math.max(0, ...vals);
    if (asymmetric) {
      const scale = f(f(max - min) / 15) || 1;
      const zp = clamp(rhe(f(-min / scale)), 0, 15);
      scales.push(scale);
      zps.push(zp);
      for (const v of vals) codes.push(clamp(rhe(f(v / scale)) + zp, 0, 15));
    } else {
      const scale = f(Math.max(max, -min) / 7) || 1;
      scales.push(scale);
      for (const v of vals) codes.push(clamp(rhe(f(v / scale)), -8, 7) + 8);
    }
  }
  return { codes, scales, zps };
}

/** Asymmetric int8 per row ([min, max] widened to 0). */
function specInt8AsymRow(
  w: ArrayLike<number>,
): { q: number[]; scale: number; zp: number } {
  const vals = Array.from(w);
  const lo = Math.min(0, ...vals), hi = Math.max(0, ...vals);
  const scale = f(f(hi - lo) / 255) || 1;
  const zp = clamp(rhe(-128 - f(lo / scale)), -128, 127);
  return {
    q: vals.map((v) => clamp(rhe(f(v / scale)) + zp, -128, 127)),
    scale,
    zp,
  };
}

/** Symmetric int8 per row. */
function specInt8Row(w: ArrayLike<number>): { q: number[]; scale: number } {
  const vals = Array.from(w);
  const scale = f(Math.max(...vals.map(Math.abs)) / 127) || 1;
  return {
    q: vals.map((v) => clamp(rhe(f(v / scale)), -128, 127)),
    scale,
  };
}

/** The nibbles of packed bytes: element 2j is the low nibble of byte j. */
function nibbles(bytes: Uint8Array): number[] {
  const out: number[] = [];
  for (const b of bytes) out.push(b & 0x0f, b >> 4);
  return out;
}

/** compressed-tensors' 4-bit codes of I32 words, eight per word, element k at bits [4k, 4k + 4). */
function nibblesOfWords(words: Int32Array): number[] {
  const out: number[] = [];
  for (const w of words) {
    for (let k = 0; k < 8; k++) out.push((w >>> (4 * k)) & 15);
  }
  return out;
}

/** Zero points packed along dim 0: [r, g] in word [r >> 3, g], bits 4(r & 7). */
function unpackRowsOfNibbles(
  words: Int32Array,
  rows: number,
  groups: number,
): number[] {
  const out: number[] = [];
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) {
      out.push((words[(r >> 3) * groups + g]! >>> (4 * (r & 7))) & 15);
    }
  }
  return out;
}

/** f32 → bf16 → f32, round to nearest even (the stored scale). */
function bf16(x: number): number {
  const b = new Uint32Array(new Float32Array([x]).buffer)[0]!;
  const r = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) << 16;
  return new Float32Array(new Uint32Array([r]).buffer)[0]!;
}

const f32Bits = (xs: ArrayLike<number>) => [
  ...new Uint32Array(Float32Array.from(xs as number[]).buffer),
];

// ------------------------------------------------------------- helpers

/** A Llama-shaped checkpoint every supported group size splits. */
function model(dir: string): Promise<unknown> {
  return makeDemoCheckpoint(join(dir, "m"), {
    layers: 1,
    hidden: 128,
    intermediate: 256,
    vocab: 64,
    heads: 4,
    kvHeads: 2,
  });
}

/** The original weight of `path`, f32 [out, in]. */
async function originalWeight(
  dir: string,
  path: string,
): Promise<{ w: Float32Array; out: number; inF: number }> {
  using m = await Checkpoint.open(join(dir, "m"));
  const t = await m.read(`${path}.weight`);
  return { w: t.toF32Array(), out: t.shape[0]!, inF: t.shape[1]! };
}

async function rawTensor(
  dir: string,
  name: string,
): Promise<{ dtype: string; shape: number[]; bytes: Uint8Array }> {
  using q = await Checkpoint.open(dir);
  const e = q.entry(name);
  assert.ok(e, `${name} is stored`);
  const bytes = await q.file(e.shard).readBytes(name);
  return {
    dtype: e.info.safetensorsDtype,
    shape: [...e.info.shape],
    bytes: bytes.slice(),
  };
}

async function quantizationMetadata(
  dir: string,
): Promise<Record<string, unknown>> {
  using q = await Checkpoint.open(dir);
  using f = await SafetensorsFile.open(q.shardPath(q.shardNames[0]!));
  return JSON.parse(f.metadata!.quantization!);
}

const LAYER = "model.layers.0.mlp.down_proj"; // [128, 256]

// ------------------------------------------------- native layout, exactly

Deno.test("w4a16 symmetric stores int4_weights U8 [out, in/2] (2j low nibble, q + 8) and F32 scales [out, in/group] by the spec", async () => {
  await withDir(async (dir) => {
    await model(dir);
    const q = join(dir, "q");
    await quantizeOk(
      join(dir, "m"),
      q,
      "--method",
      "w4a16",
      "--group-size",
      "64",
    );
    const { w, out, inF } = await originalWeight(dir, LAYER);
    const packed = await rawTensor(q, `${LAYER}.int4_weights`);
    const scales = await rawTensor(q, `${LAYER}.scales`);
    assert.deepEqual([packed.dtype, packed.shape], ["U8", [out, inF / 2]]);
    assert.deepEqual([scales.dtype, scales.shape], ["F32", [out, inF / 64]]);
    using ckpt = await Checkpoint.open(q);
    assert.equal(ckpt.entry(`${LAYER}.zero_points`), undefined);
    assert.equal(ckpt.entry(`${LAYER}.int8_weights`), undefined);
    const codes = nibbles(packed.bytes);
    const got = new Float32Array(scales.bytes.buffer);
    for (let row = 0; row < out; row++) {
      const spec = specInt4Row(
        w.subarray(row * inF, (row + 1) * inF),
        64,
        false,
      );
      assert.deepEqual(
        codes.slice(row * inF, (row + 1) * inF),
        spec.codes,
        `row ${row}`,
      );
      assert.deepEqual(
        f32Bits(got.subarray(row * (inF / 64), (row + 1) * (inF / 64))),
        f32Bits(spec.scales),
      );
    }
    // Some codes are below 8: the offset is there, not two's complement.
    assert.ok(codes.some((c) => c < 8) && codes.some((c) => c > 8));
  });
});

Deno.test("w4a16 --asymmetric stores codes q (no offset) and U8 zero_points [out, in/group] by the spec", async () => {
  await withDir(async (dir) => {
    await model(dir);
    const q = join(dir, "q");
    await quantizeOk(
      join(dir, "m"),
      q,
      "-m",
      "w4a16",
      "--asymmetric",
    );
    const { w, out, inF } = await originalWeight(dir, LAYER);
    const packed = await rawTensor(q, `${LAYER}.int4_weights`);
    const scales = await rawTensor(q, `${LAYER}.scales`);
    const zps = await rawTensor(q, `${LAYER}.zero_points`);
    const groups = inF / 128;
    assert.deepEqual([zps.dtype, zps.shape], ["U8", [out, groups]]);
    assert.deepEqual(scales.shape, [out, groups]);
    const codes = nibbles(packed.bytes);
    const s = new Float32Array(scales.bytes.buffer);
    for (let row = 0; row < out; row++) {
      const spec = specInt4Row(
        w.subarray(row * inF, (row + 1) * inF),
        128,
        true,
      );
      assert.deepEqual(codes.slice(row * inF, (row + 1) * inF), spec.codes);
      assert.deepEqual(
        f32Bits(s.subarray(row * groups, (row + 1) * groups)),
        f32Bits(spec.scales),
      );
      assert.deepEqual(
        [...zps.bytes.subarray(row * groups, (row + 1) * groups)],
        spec.zps,
      );
    }
  });
});

Deno.test("--asymmetric int8 (w8a16 and w8a8) stores I8 zero_points [out] beside int8_weights and scales, by the spec", async () => {
  await withDir(async (dir) => {
    await model(dir);
    const { w, out, inF } = await originalWeight(dir, LAYER);
    for (const method of ["w8a16", "w8a8"]) {
      const q = join(dir, method);
      await quantizeOk(
        join(dir, "m"),
        q,
        "-m",
        method,
        "--asymmetric",
      );
      const qs = await rawTensor(q, `${LAYER}.int8_weights`);
      const ss = await rawTensor(q, `${LAYER}.scales`);
      const zs = await rawTensor(q, `${LAYER}.zero_points`);
      assert.deepEqual([qs.dtype, qs.shape], ["I8", [out, inF]]);
      assert.deepEqual([ss.dtype, ss.shape], ["F32", [out]]);
      assert.deepEqual([zs.dtype, zs.shape], ["I8", [out]]);
      const qv = new Int8Array(qs.bytes.buffer);
      const sv = new Float32Array(ss.bytes.buffer);
      const zv = new Int8Array(zs.bytes.buffer);
      for (let row = 0; row < out; row++) {
        const spec = specInt8AsymRow(w.subarray(row * inF, (row + 1) * inF));
        assert.deepEqual([...qv.subarray(row * inF, (row + 1) * inF)], spec.q);
        assert.deepEqual(f32Bits([sv[row]!]), f32Bits([spec.scale]));
        assert.equal(zv[row], spec.zp);
      }
      const meta = await quantizationMetadata(q);
      assert.equal(meta.symmetric, false);
      assert.equal(meta.method, method);
    }
  });
});

Deno.test("w8a8 stores exactly the int8 tensors of w8a16, recording method w8a8 and int8 dynamic per-token activations", async () => {
  await withDir(async (dir) => {
    await model(dir);
    for (const m of ["w8a16", "w8a8"]) {
      assert.equal(
        (await runMain([
          "quantize",
          join(dir, "m"),
          "--out",
          join(dir, m),
          "-m",
          m,
        ]))
          .code,
        0,
      );
    }
    using a = await Checkpoint.open(join(dir, "w8a16"));
    using b = await Checkpoint.open(join(dir, "w8a8"));
    assert.deepEqual(
      a.entries.map((e) => [e.name, e.info.dtype, e.info.shape]),
      b.entries.map((e) => [e.name, e.info.dtype, e.info.shape]),
    );
    for (const e of a.entries) {
      assert.deepEqual(
        await a.file(e.shard).readBytes(e.name),
        await b.file(b.entry(e.name)!.shard).readBytes(e.name),
        e.name,
      );
    }
    const { w, inF } = await originalWeight(dir, LAYER);
    const qs = await rawTensor(join(dir, "w8a8"), `${LAYER}.int8_weights`);
    assert.deepEqual(
      [...new Int8Array(qs.bytes.buffer).subarray(0, inF)],
      specInt8Row(w.subarray(0, inF)).q,
    );
    const meta = await quantizationMetadata(join(dir, "w8a8"));
    assert.deepEqual(
      [
        meta.method,
        meta.bits,
        meta.group_size,
        meta.symmetric,
        meta.activations,
      ],
      ["w8a8", 8, null, true, "int8 dynamic per-token"],
    );
    const config = JSON.parse(
      await Deno.readTextFile(join(dir, "w8a8", "config.json")),
    ).quantization_config;
    assert.deepEqual(
      [config.quant_method, config.method, config.bits, config.group_size],
      ["tinyq", "w8a8", 8, null],
    );
    assert.equal(b.quantization?.activations, "int8 dynamic per-token");
  });
});

Deno.test("the quantization metadata and config.json record method, bits, group_size and symmetric for w4a16", async () => {
  await withDir(async (dir) => {
    await model(dir);
    const q = join(dir, "q");
    assert.equal(
      (await runMain([
        "quantize",
        join(dir, "m"),
        "--out",
        q,
        "-m",
        "w4a16",
        "-g",
        "32",
        "--asymmetric",
        "-x",
        "lm_head",
      ])).code,
      0,
    );
    const meta = await quantizationMetadata(q);
    const config = JSON.parse(await Deno.readTextFile(join(q, "config.json")))
      .quantization_config;
    for (const block of [meta, config]) {
      assert.deepEqual(
        [
          block.method,
          block.bits,
          block.group_size,
          block.symmetric,
          block.granularity,
        ],
        ["w4a16", 4, 32, false, "group"],
      );
    }
    using ckpt = await Checkpoint.open(q);
    assert.deepEqual(
      [
        ckpt.quantization?.method,
        ckpt.quantization?.bits,
        ckpt.quantization?.groupSize,
        ckpt.quantization?.symmetric,
      ],
      ["w4a16", 4, 32, false],
    );
    assert.deepEqual(ckpt.quantization?.excluded, ["lm_head"]);
    const layer = ckpt.layers().find((l) => l.path === LAYER)!;
    assert.deepEqual([layer.outFeatures, layer.inFeatures], [128, 256]);
  });
});

// ------------------------------------------- round trips: CLI and library

const CASES: {
  label: string;
  args: string[];
  method: "w8a32" | "w8a16" | "w8a8" | "w4a16";
  options: { asymmetric?: boolean; groupSize?: number };
  cls: unknown;
}[] = [
  {
    label: "w8a32",
    args: [],
    method: "w8a32",
    options: {},
    cls: W8A32LinearLayer,
  },
  {
    label: "w8a16 --asymmetric",
    args: ["--asymmetric"],
    method: "w8a16",
    options: { asymmetric: true },
    cls: W8A16LinearLayer,
  },
  {
    label: "w8a8",
    args: [],
    method: "w8a8",
    options: {},
    cls: W8A8LinearLayer,
  },
  {
    label: "w4a16 --group-size 32",
    args: ["--group-size", "32"],
    method: "w4a16",
    options: { groupSize: 32 },
    cls: W4A16LinearLayer,
  },
  {
    label: "w4a16 --asymmetric",
    args: ["--asymmetric"],
    method: "w4a16",
    options: { asymmetric: true },
    cls: W4A16LinearLayer,
  },
];

for (const c of CASES) {
  Deno.test(`${c.label}: CLI and Quantizer write byte-identical checkpoints that load back, run, evaluate and dequantize`, async () => {
    await withDir(async (dir) => {
      await model(dir);
      const m = join(dir, "m");
      const cli = join(dir, "cli");
      const exclude = ["lm_head"];
      await quantizeOk(
        m,
        cli,
        "-m",
        c.method,
        ...c.args,
        "-x",
        "lm_head",
      );
      const quantizer = new Quantizer();
      try {
        await quantizer.loadModel(m);
        await quantizer.quantize(c.method, exclude, c.options);
        await quantizer.saveModel(join(dir, "lib"));
      } finally {
        quantizer.close();
      }
      assert.deepEqual(await snapshot(join(dir, "lib")), await snapshot(cli));

      // Loaded back: the method's layers, which run forward.
      const back = new Quantizer();
      try {
        const loaded = await back.loadModel(cli);
        const layer = loaded.getModule(LAYER)!;
        assert.ok(
          layer instanceof (c.cls as typeof Module),
          layer.constructor.name,
        );
        assert.ok(loaded.getModule("lm_head") instanceof Linear);
        const x = new Tensor(new Float32Array(256).fill(0.5), [1, 256]);
        const y = await (layer as W8A16LinearLayer).forward(
          c.method === "w8a32" || c.method === "w8a8" ? x : x.to("bf16"),
        );
        assert.deepEqual(y.shape, [1, 128]);
      } finally {
        back.close();
      }

      // eval against the original passes, with every layer compared.
      const e = await runMain(["eval", m, cli, "--backend", "cpu", "--json"]);
      const report = JSON.parse(e.stdout);
      assert.equal(e.code, 0, e.stdout);
      assert.equal(report.verdict, "pass");
      assert.equal(report.layers.length, 7);

      // dequantize gives (q − zp) · scale, independently decoded here.
      await dequantizeCheckpoint(cli, join(dir, "f"), { dtype: "f32" });
      using f = await Checkpoint.open(join(dir, "f"));
      assert.equal(f.quantization, null);
      const deq = (await f.read(`${LAYER}.weight`)).toF32Array();
      const { w, out, inF } = await originalWeight(dir, LAYER);
      const want = new Float32Array(out * inF);
      for (let row = 0; row < out; row++) {
        const wr = w.subarray(row * inF, (row + 1) * inF);
        if (c.method === "w4a16") {
          const g = c.options.groupSize ?? 128;
          const s = specInt4Row(wr, g, !!c.options.asymmetric);
          for (let k = 0; k < inF; k++) {
            const gi = Math.floor(k / g);
            const off = c.options.asymmetric ? s.zps[gi]! : 8;
            want[row * inF + k] = (s.codes[k]! - off) * s.scales[gi]!;
          }
        } else if (c.options.asymmetric) {
          const s = specInt8AsymRow(wr);
          for (let k = 0; k < inF; k++) {
            want[row * inF + k] = (s.q[k]! - s.zp) * s.scale;
          }
        } else {
          const s = specInt8Row(wr);
          for (let k = 0; k < inF; k++) {
            want[row * inF + k] = s.q[k]! * s.scale;
          }
        }
      }
      assert.deepEqual(f32Bits(deq), f32Bits(want));
    });
  });
}

Deno.test("GPT-2 Conv1D weights go through w4a16 transposed, and come back [in, out] on dequantize", async () => {
  await withDir(async (dir) => {
    const g = join(dir, "g");
    await writeSyntheticCheckpoint(g, [
      { name: "h.0.attn.c_attn.bias", shape: [192], std: 0.05 },
      { name: "h.0.attn.c_attn.weight", shape: [64, 192], std: 0.05 },
      { name: "h.0.mlp.c_proj.weight", shape: [256, 64], std: 0.05 },
      { name: "wte.weight", shape: [16, 64], std: 0.05 },
    ], {
      files: { "config.json": JSON.stringify({ model_type: "gpt2" }) },
    });
    await quantizeOk(g, join(dir, "q"), "-m", "w4a16", "-g", "64");
    const packed = await rawTensor(
      join(dir, "q"),
      "h.0.attn.c_attn.int4_weights",
    );
    assert.deepEqual(packed.shape, [192, 32]);
    using orig = await Checkpoint.open(g);
    const stored = (await orig.read("h.0.attn.c_attn.weight")).toF32Array();
    const row0 = Array.from({ length: 64 }, (_, k) => stored[k * 192]!);
    assert.deepEqual(
      nibbles(packed.bytes).slice(0, 64),
      specInt4Row(row0, 64, false).codes,
    );
    await dequantizeCheckpoint(join(dir, "q"), join(dir, "f"));
    using f = await Checkpoint.open(join(dir, "f"));
    assert.deepEqual(f.entry("h.0.attn.c_attn.weight")!.info.shape, [64, 192]);
    assert.deepEqual(f.entry("h.0.mlp.c_proj.weight")!.info.shape, [256, 64]);
  });
});

Deno.test("a Linear bigger than one 16 MiB block quantizes in blocks of whole rows to the bytes of the whole matrix (int4 and asymmetric int8)", async () => {
  await withDir(async (dir) => {
    // 4100 × 2048 bf16 = 16.0 MiB + 4 rows: two blocks, the second of 4
    // rows (half a word of compressed-tensors' row-packed zero points).
    const rows = 4100, cols = 2048;
    await writeSyntheticCheckpoint(join(dir, "m"), [
      { name: "fc.weight", shape: [rows, cols], std: 0.05 },
    ], { files: { "config.json": "{}" } });
    using m = await Checkpoint.open(join(dir, "m"));
    const w = await m.read("fc.weight");
    await quantizeCheckpoint(join(dir, "m"), join(dir, "q4"), {
      method: "w4a16",
      asymmetric: true,
    });
    const whole = quantizeInt4(w.data, "bf16", rows, cols, {
      groupSize: 128,
      asymmetric: true,
    });
    using q4 = await Checkpoint.open(join(dir, "q4"));
    assert.deepEqual(
      (await q4.read("fc.int4_weights")).data,
      whole.packed,
    );
    assert.deepEqual((await q4.read("fc.scales")).data, whole.scales);
    assert.deepEqual((await q4.read("fc.zero_points")).data, whole.zeroPoints);
    await quantizeCheckpoint(join(dir, "m"), join(dir, "ct"), {
      method: "w4a16",
      asymmetric: true,
      format: findFormat("compressed-tensors")!,
    });
    using ct = await Checkpoint.open(join(dir, "ct"));
    const words = (await ct.read("fc.weight_zero_point")).data as Int32Array;
    assert.equal(words.length, Math.ceil(rows / 8) * (cols / 128));
    assert.deepEqual(
      unpackRowsOfNibbles(words, rows, cols / 128),
      [...whole.zeroPoints!],
    );
    await Deno.remove(join(dir, "ct"), { recursive: true });
    await quantizeCheckpoint(join(dir, "m"), join(dir, "q8"), {
      method: "w8a16",
      asymmetric: true,
    });
    const r8 = quantizeRowsInt8Asymmetric(w.data, "bf16", rows, cols);
    using q8 = await Checkpoint.open(join(dir, "q8"));
    assert.deepEqual((await q8.read("fc.int8_weights")).data, r8.q);
    assert.deepEqual((await q8.read("fc.zero_points")).data, r8.zeroPoints);
  });
});

// ------------------------------------------- compressed-tensors exports

async function ctExport(dir: string, args: string[]): Promise<string> {
  const out = join(dir, "ct");
  await quantizeOk(
    join(dir, "m"),
    out,
    "--format",
    "compressed-tensors",
    ...args,
  );
  return out;
}

Deno.test("--format compressed-tensors -m w4a16 writes pack-quantized 4-bit groups: weight_packed nibbles q + 8, bf16 group scales, the config block", async () => {
  await withDir(async (dir) => {
    await model(dir);
    const out = await ctExport(dir, ["-m", "w4a16", "-g", "64"]);
    const { w, out: rows, inF } = await originalWeight(dir, LAYER);
    const packed = await rawTensor(out, `${LAYER}.weight_packed`);
    const scale = await rawTensor(out, `${LAYER}.weight_scale`);
    const shape = await rawTensor(out, `${LAYER}.weight_shape`);
    assert.deepEqual([packed.dtype, packed.shape], ["I32", [rows, inF / 8]]);
    assert.deepEqual([scale.dtype, scale.shape], ["BF16", [rows, inF / 64]]);
    assert.deepEqual(
      [...new BigInt64Array(shape.bytes.buffer)],
      [BigInt(rows), BigInt(inF)],
    );
    using ckpt = await Checkpoint.open(out);
    assert.equal(ckpt.entry(`${LAYER}.weight_zero_point`), undefined);
    const codes = nibblesOfWords(new Int32Array(packed.bytes.buffer));
    const scales = new Uint16Array(scale.bytes.buffer);
    for (let r = 0; r < rows; r++) {
      const spec = specInt4Row(w.subarray(r * inF, (r + 1) * inF), 64, false);
      assert.deepEqual(codes.slice(r * inF, (r + 1) * inF), spec.codes);
      for (let g = 0; g < inF / 64; g++) {
        const got = new Float32Array(
          new Uint32Array([scales[r * (inF / 64) + g]! << 16]).buffer,
        )[0]!;
        assert.equal(got, bf16(spec.scales[g]!));
      }
    }
    const qc = JSON.parse(await Deno.readTextFile(join(out, "config.json")))
      .quantization_config;
    assert.equal(qc.format, "pack-quantized");
    assert.deepEqual(qc.config_groups.group_0, {
      input_activations: null,
      output_activations: null,
      targets: ["Linear"],
      weights: {
        actorder: null,
        block_structure: null,
        dynamic: false,
        group_size: 64,
        num_bits: 4,
        observer: "minmax",
        observer_kwargs: {},
        strategy: "group",
        symmetric: true,
        type: "int",
      },
    });
    assert.deepEqual(qc.ignore, ["lm_head"]);
    // Read back as W4A16 (bf16 scales), evaluated and dequantized.
    assert.deepEqual(
      [
        ckpt.quantization?.method,
        ckpt.quantization?.bits,
        ckpt.quantization?.groupSize,
        ckpt.quantization?.symmetric,
      ],
      ["w4a16", 4, 64, true],
    );
    const layer = await ckpt.quantizedLayer(LAYER);
    assert.ok(layer instanceof W4A16LinearLayer && layer.groupSize === 64);
    const e = await runMain([
      "eval",
      join(dir, "m"),
      out,
      "--backend",
      "cpu",
      "--json",
    ]);
    assert.equal(JSON.parse(e.stdout).verdict, "pass", e.stdout);
    // A checkpoint another tool wrote: the config block alone says the same.
    const foreign = detectCompressedTensors(null, { quantization_config: qc });
    assert.deepEqual(
      [foreign?.method, foreign?.bits, foreign?.groupSize, foreign?.symmetric],
      ["w4a16", 4, 64, true],
    );
  });
});

Deno.test("--format compressed-tensors -m w4a16 --asymmetric adds weight_zero_point packed eight rows per word, codes without offset", async () => {
  await withDir(async (dir) => {
    await model(dir);
    const out = await ctExport(dir, [
      "-m",
      "w4a16",
      "-g",
      "32",
      "--asymmetric",
    ]);
    const { w, out: rows, inF } = await originalWeight(dir, LAYER);
    const groups = inF / 32;
    const packed = await rawTensor(out, `${LAYER}.weight_packed`);
    const zp = await rawTensor(out, `${LAYER}.weight_zero_point`);
    assert.deepEqual([zp.dtype, zp.shape], ["I32", [rows / 8, groups]]);
    const codes = nibblesOfWords(new Int32Array(packed.bytes.buffer));
    const zps = unpackRowsOfNibbles(
      new Int32Array(zp.bytes.buffer),
      rows,
      groups,
    );
    for (let r = 0; r < rows; r++) {
      const spec = specInt4Row(w.subarray(r * inF, (r + 1) * inF), 32, true);
      assert.deepEqual(codes.slice(r * inF, (r + 1) * inF), spec.codes);
      assert.deepEqual(zps.slice(r * groups, (r + 1) * groups), spec.zps);
    }
    const qc = JSON.parse(await Deno.readTextFile(join(out, "config.json")))
      .quantization_config;
    assert.deepEqual(
      [
        qc.config_groups.group_0.weights.symmetric,
        qc.config_groups.group_0.weights.group_size,
      ],
      [false, 32],
    );
    using ckpt = await Checkpoint.open(out);
    const layer = await ckpt.quantizedLayer(LAYER) as W4A16LinearLayer;
    assert.deepEqual([...layer.zeroPoints!.data], zps);
    // dequantize: (code − zp) · bf16(scale), element by element.
    await dequantizeCheckpoint(out, join(dir, "f"), { dtype: "f32" });
    using f = await Checkpoint.open(join(dir, "f"));
    const deq = (await f.read(`${LAYER}.weight`)).toF32Array();
    const spec = specInt4Row(w.subarray(0, inF), 32, true);
    for (let k = 0; k < inF; k++) {
      const g = Math.floor(k / 32);
      assert.equal(
        deq[k],
        Math.fround((spec.codes[k]! - spec.zps[g]!) * bf16(spec.scales[g]!)),
      );
    }
    const e = await runMain([
      "eval",
      join(dir, "m"),
      out,
      "--backend",
      "cpu",
      "--json",
    ]);
    assert.equal(JSON.parse(e.stdout).verdict, "pass", e.stdout);
  });
});

Deno.test("--format compressed-tensors -m w8a8 writes int-quantized int8 weight and weight_scale with dynamic per-token int8 input activations", async () => {
  await withDir(async (dir) => {
    await model(dir);
    const out = await ctExport(dir, ["-m", "w8a8"]);
    const { w, out: rows, inF } = await originalWeight(dir, LAYER);
    const q = await rawTensor(out, `${LAYER}.weight`);
    const scale = await rawTensor(out, `${LAYER}.scale`).catch(() => null);
    assert.equal(scale, null);
    const ws = await rawTensor(out, `${LAYER}.weight_scale`);
    assert.deepEqual([q.dtype, q.shape], ["I8", [rows, inF]]);
    assert.deepEqual([ws.dtype, ws.shape], ["BF16", [rows, 1]]);
    using ckpt = await Checkpoint.open(out);
    assert.equal(ckpt.entry(`${LAYER}.weight_packed`), undefined);
    assert.equal(ckpt.entry(`${LAYER}.weight_shape`), undefined);
    const qv = new Int8Array(q.bytes.buffer);
    for (let r = 0; r < rows; r++) {
      assert.deepEqual(
        [...qv.subarray(r * inF, (r + 1) * inF)],
        specInt8Row(w.subarray(r * inF, (r + 1) * inF)).q,
      );
    }
    const qc = JSON.parse(await Deno.readTextFile(join(out, "config.json")))
      .quantization_config;
    assert.equal(qc.format, "int-quantized");
    const g = qc.config_groups.group_0;
    assert.deepEqual(
      [
        g.input_activations.num_bits,
        g.input_activations.type,
        g.input_activations.symmetric,
        g.input_activations.strategy,
        g.input_activations.dynamic,
      ],
      [8, "int", true, "token", true],
    );
    assert.deepEqual(
      [g.weights.num_bits, g.weights.strategy, g.weights.symmetric],
      [8, "channel", true],
    );
    assert.equal(ckpt.quantization?.method, "w8a8");
    assert.deepEqual(
      ckpt.layers().find((l) => l.path === LAYER)?.inFeatures,
      inF,
    );
    assert.ok((await ckpt.quantizedLayer(LAYER)) instanceof W8A8LinearLayer);
    const e = await runMain([
      "eval",
      join(dir, "m"),
      out,
      "--backend",
      "cpu",
      "--json",
    ]);
    assert.equal(JSON.parse(e.stdout).verdict, "pass", e.stdout);
    await dequantizeCheckpoint(out, join(dir, "f"));
    using f = await Checkpoint.open(join(dir, "f"));
    assert.deepEqual(
      [
        f.entry(`${LAYER}.weight`)?.info.dtype,
        f.entry(`${LAYER}.weight_scale`),
      ],
      ["bf16", undefined],
    );
    const foreign = detectCompressedTensors(null, { quantization_config: qc });
    assert.deepEqual(
      [foreign?.method, foreign?.activations],
      ["w8a8", "int8 dynamic per-token"],
    );
  });
});

// ------------------------------------------------------------ bad input

Deno.test("a group size that does not divide a layer's inputs fails before anything is written, naming tensor, sizes and the fix", async () => {
  await withDir(async (dir) => {
    await makeDemoCheckpoint(join(dir, "m"), {
      layers: 1,
      hidden: 64,
      intermediate: 96,
      vocab: 32,
    });
    const m = join(dir, "m");
    let r = await runMain([
      "quantize",
      m,
      "--out",
      join(dir, "q"),
      "-m",
      "w4a16",
    ]);
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `tinyq quantize: error: ${m}: tensor "lm_head.weight": 64 input features are not a multiple of the group size 128; ` +
        "use a smaller group (--group-size 32 or 64) or leave the layer in float (--exclude lm_head)\n",
    );
    r = await runMain([
      "quantize",
      m,
      "--out",
      join(dir, "q"),
      "-m",
      "w4a16",
      "-g",
      "64",
    ]);
    assert.equal(
      r.stderr,
      `tinyq quantize: error: ${m}: tensor "model.layers.0.mlp.down_proj.weight": 96 input features are not a multiple of the group size 64; ` +
        "use a smaller group (--group-size 32) or leave the layer in float (--exclude model.layers.0.mlp.down_proj)\n",
    );
    const left = [];
    for await (const e of Deno.readDir(dir)) left.push(e.name);
    assert.deepEqual(left, ["m"], "no output, no temporary folder");
    r = await quantizeOk(
      m,
      join(dir, "q"),
      "-m",
      "w4a16",
      "-g",
      "64",
      "-x",
      "down_proj",
    );
    // eval --schemes checks the same way, before any work.
    r = await runMain(["eval", m, "--schemes", "w8a16,w4a16-g64"]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /tensor "model\.layers\.0\.mlp\.down_proj\.weight": 96 input features/,
    );
  });
});

Deno.test("--method, --group-size and --schemes are checked up front as usage errors", async () => {
  const cases: [string[], string][] = [
    [
      ["quantize", "m", "--out", "o", "-m", "w8a16", "--group-size", "32"],
      "tinyq quantize: --group-size applies to --method w4a16 only (w8a16 has one int8 scale per output row)",
    ],
    [
      ["quantize", "m", "--out", "o", "-m", "w4a16", "--group-size", "48"],
      'tinyq quantize: --group-size must be 32, 64, 128, got "48"',
    ],
    [
      ["demo", "-m", "w2a2"],
      'tinyq demo: unknown --method "w2a2"; expected w8a16, w8a32, w8a8 or w4a16',
    ],
    [
      ["eval", "m", "--schemes", "w8a16,w3a16"],
      'tinyq eval: unknown scheme "w3a16"; a scheme is a method (w8a32, w8a16, w8a8, w4a16) with optional -g32/-g64/-g128 (w4a16) and -asym, e.g. w4a16-g32-asym',
    ],
    [
      ["eval", "m", "--schemes", "w8a8-g32"],
      'tinyq eval: scheme "w8a8-g32": a group size applies to w4a16 only (the int8 methods have one scale per output row)',
    ],
    [
      ["eval", "a", "b", "--schemes", "w8a16"],
      "tinyq eval: --schemes compares schemes on one checkpoint; give only <original>",
    ],
  ];
  for (const [args, line] of cases) {
    const r = await runMain(args);
    assert.equal(
      r.stderr,
      `${line} (see tinyq ${args[0]} --help)\n`,
      args.join(" "),
    );
    assert.equal(r.code, 2, args.join(" "));
  }
});

Deno.test("Quantizer.quantize() knows four methods, takes groupSize for w4a16 only, and leaves the model untouched when a layer cannot be grouped", async () => {
  const make = () => {
    const model = new Module();
    model.setChild("a", new Linear(64, 8));
    model.setChild("b", new Linear(96, 8));
    return model;
  };
  await assert.rejects(
    new Quantizer(make()).quantize("w2a2" as "w8a8"),
    /Unknown quantization method "w2a2"; known methods: w8a32, w8a16, w8a8, w4a16/,
  );
  await assert.rejects(
    new Quantizer(make()).quantize("w8a16", [], { groupSize: 32 }),
    /groupSize applies to w4a16 only/,
  );
  const model = make();
  await assert.rejects(
    new Quantizer(model).quantize("w4a16", [], { groupSize: 64 }),
    /Tensor "b\.weight" has 96 input features, not a multiple of the group size 64/,
  );
  assert.ok(model.getChild("a") instanceof Linear, "nothing replaced");
  await new Quantizer(model).quantize("w4a16", ["b"], { groupSize: 64 });
  const a = model.getChild("a") as W4A16LinearLayer;
  assert.deepEqual([a.groupSize, a.asymmetric], [64, false]);
  assert.ok(model.getChild("b") instanceof Linear);
  const w8a8 = make();
  await new Quantizer(w8a8).quantize("w8a8", [], { asymmetric: true });
  assert.ok(w8a8.getChild("b") instanceof W8A8LinearLayer);
  assert.equal((w8a8.getChild("b") as W8A8LinearLayer).zeroPoints?.dtype, "i8");
});

Deno.test("saveModule() refuses layers of two schemes, and a method that does not store its layers", async () => {
  await withDir(async (dir) => {
    const model = new Module();
    model.setChild("a", new Linear(64, 8));
    model.setChild("b", new Linear(64, 8));
    await new Quantizer(model).quantize("w4a16", ["b"], { groupSize: 32 });
    await assert.rejects(
      saveModule(model, join(dir, "x"), { method: "w8a16" }),
      /a: is a W4A16LinearLayer, which method w8a16 does not store/,
    );
    const b = new W4A16LinearLayer(64, 8, { groupSize: 64 });
    model.setChild("b", b);
    await assert.rejects(
      saveModule(model, join(dir, "x"), { method: "w4a16" }),
      /: b: is quantized 4-bit group 64 symmetric, but a is 4-bit group 32 symmetric; a checkpoint records one scheme$/,
    );
  });
});

// ------------------------------------------------ eval --schemes, the demo

Deno.test("eval <original> prints one row per scheme: bits per weight, size, weight SNR, output error", async () => {
  await withDir(async (dir) => {
    await model(dir);
    const m = join(dir, "m");
    const schemes = ["w8a16", "w8a8", "w8a16-asym", "w4a16-g32", "w4a16-asym"];
    const r = await runMain([
      "eval",
      m,
      "--schemes",
      schemes.join(","),
      "-x",
      "lm_head",
      "--backend",
      "cpu",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /\nscheme +activations +bits\/W +size MiB +SNR\(W\) mean +SNR\(W\) min +max\|dW\| +err\(y\) mean +err\(y\) max +cos\(y\) min\n/,
    );
    // Bits per weight: int8 + f32 scale per row of 128 or 256 inputs; int4 + f32 per group.
    const row = (name: string) =>
      new RegExp(`\\n${name} +[^\\n]+\\n`).exec(r.stdout)?.[0] ?? "";
    for (
      const name of [
        "original",
        "w8a16",
        "w8a8",
        "w8a16-asym",
        "w4a16-g32",
        "w4a16-g128-asym",
      ]
    ) {
      assert.ok(row(name), `a row for ${name}`);
    }
    assert.match(row("original"), /float +16\.00 /);
    assert.match(row("w4a16-g32"), / 5\.00 /);
    assert.match(row("w4a16-g128-asym"), / 4\.31 /);
    assert.match(row("w8a8"), /int8 per token/);
    assert.match(
      r.stdout,
      /^schemes: .*, 7 Linear layers \(1 excluded: lm_head\), 8 random tokens per layer \(seed 0\)\n/,
    );

    const j = JSON.parse(
      (await runMain([
        "eval",
        m,
        "--schemes",
        schemes.join(","),
        "-x",
        "lm_head",
        "--json",
      ])).stdout,
    );
    assert.deepEqual(
      j.rows.map((x: { scheme: { name: string } }) => x.scheme.name),
      ["w8a16", "w8a8", "w8a16-asym", "w4a16-g32", "w4a16-g128-asym"],
    );
    const by = Object.fromEntries(
      j.rows.map((x: { scheme: { name: string } }) => [x.scheme.name, x]),
    );
    assert.equal(j.layers, 7);
    assert.ok(by["w8a16"].weightSnrMinDb > 35);
    assert.ok(
      by["w4a16-g32"].weightSnrMinDb > 15 &&
        by["w4a16-g32"].weightSnrMinDb < 30,
    );
    // Finer groups and zero points both lower the error; 4-bit is far above 8-bit.
    assert.ok(
      by["w4a16-g32"].outputRelErrMean > 5 * by["w8a16"].outputRelErrMean,
    );
    assert.ok(by["w4a16-g128-asym"].weightSnrMeanDb > 19);
    assert.ok(by["w8a8"].outputRelErrMean > by["w8a16"].outputRelErrMean * 0.5);
    // The size column is what quantize writes for that scheme.
    await quantizeCheckpoint(m, join(dir, "q"), {
      method: "w4a16",
      groupSize: 32,
      exclude: ["lm_head"],
    });
    using q = await Checkpoint.open(join(dir, "q"));
    assert.equal(
      by["w4a16-g32"].checkpointBytes,
      q.entries.reduce((s, e) => s + e.info.byteLength, 0),
    );
  });
});

Deno.test("parseScheme() reads method, group and zero points in any order", () => {
  assert.deepEqual(parseScheme("W4A16-asym-g32"), {
    name: "w4a16-g32-asym",
    method: "w4a16",
    groupSize: 32,
    asymmetric: true,
  });
  assert.equal(parseScheme("w4a16").name, "w4a16-g128");
  assert.equal(parseScheme("w8a8-asym").name, "w8a8-asym");
  assert.throws(() => parseScheme("w4a16-g32-g64"), /unknown part "-g64"/);
});

// ------------------------------------------ the fast loops vs the reference

Deno.test("property: quantizeRowsInt8Asymmetric() equals linearQAsymmetricPerChannel() bit for bit, from f32, f16 and bf16", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 5 }),
      fc.integer({ min: 1, max: 40 }),
      fc.constantFrom("f32", "f16", "bf16"),
      fc.array(fc.float({ min: -4, max: 4, noNaN: true }), {
        minLength: 200,
        maxLength: 200,
      }),
      fc.boolean(),
      (rows, cols, dtype, pool, skew) => {
        const v = Float32Array.from(
          { length: rows * cols },
          (_, i) =>
            (skew ? Math.abs(pool[i % 200]!) : pool[i % 200]!) *
            (i % 7 === 0 ? 0.001 : 1),
        );
        const t = new Tensor(v, [rows, cols]).to(dtype);
        const want = linearQAsymmetricPerChannel(t, { axis: 0 });
        const got = quantizeRowsInt8Asymmetric(t.data, dtype, rows, cols);
        assert.deepEqual([...got.q], [...want.quantized.data]);
        assert.deepEqual(
          f32Bits(got.scales),
          f32Bits((want.scale as Tensor).data as Float32Array),
        );
        assert.deepEqual([...got.zeroPoints], [
          ...(want.zeroPoint as Tensor).data,
        ]);
      },
    ),
    { numRuns: 150 },
  );
});

Deno.test("property: quantizeInt4() matches the 4-bit spec on values full of ties, from f32, f16 and bf16", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 3 }),
      fc.constantFrom(32, 64),
      fc.constantFrom("f32", "f16", "bf16"),
      fc.boolean(),
      fc.array(fc.integer({ min: -30, max: 30 }), {
        minLength: 64,
        maxLength: 64,
      }),
      fc.integer({ min: -3, max: 3 }),
      (rows, group, dtype, asymmetric, halves, e) => {
        const cols = group * 2;
        // Multiples of 2^e / 2: many values sit exactly halfway between codes.
        const v = Float32Array.from(
          { length: rows * cols },
          (_, i) => halves[i % 64]! * 2 ** e / 2,
        );
        const t = new Tensor(v, [rows, cols]).to(dtype);
        const exact = t.toF32Array();
        const got = quantizeInt4(t.data, dtype, rows, cols, {
          groupSize: group,
          asymmetric,
        });
        const codes = nibbles(got.packed);
        for (let r = 0; r < rows; r++) {
          const spec = specInt4Row(
            exact.subarray(r * cols, (r + 1) * cols),
            group,
            asymmetric,
          );
          assert.deepEqual(codes.slice(r * cols, (r + 1) * cols), spec.codes);
          assert.deepEqual(
            f32Bits(got.scales.subarray(r * 2, r * 2 + 2)),
            f32Bits(spec.scales),
          );
          if (asymmetric) {
            assert.deepEqual(
              [...got.zeroPoints!.subarray(r * 2, r * 2 + 2)],
              spec.zps,
            );
          }
        }
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("quantizeRowsInt8Asymmetric() and quantizeInt4() name the tensor and index of a NaN or Inf", () => {
  const w = new Float32Array(64);
  w[40] = Infinity;
  assert.throws(
    () => quantizeRowsInt8Asymmetric(w, "f32", 2, 32, "fc.weight"),
    /Tensor "fc\.weight" has Infinity at \[1, 8\]/,
  );
  w[40] = NaN;
  assert.throws(
    () => quantizeInt4(w, "f32", 1, 64, { groupSize: 32, name: "fc.weight" }),
    /Tensor "fc\.weight" has NaN at \[0, 40\]/,
  );
});
