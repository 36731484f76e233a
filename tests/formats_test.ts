// Export formats (compressed-tensors pack-quantized, optimum-quanto qint8),
// checked against readings of each spec written here, independently of the
// modules under test: words are unpacked with DataView and shifts, scales are
// read back from raw bf16/f16/f32 bytes, and golden values are derived by hand
// from compressed-tensors' pack_to_int32 description.
//
// Golden files from the real libraries: compressed-tensors and optimum-quanto
// are PyPI-only (no Debian package: `apt-cache search compressed-tensors`,
// `apt-cache search quanto` find nothing) and PyPI is not reachable here, so
// the expectations below are derived by hand from the libraries' sources;
// formats_golden_test.ts checks against values their own functions computed
// (tools/make_export_fixtures.py), and formats_cli_test.ts runs the formats
// through the CLI.

import assert from "node:assert/strict";
import fc from "fast-check";
import type { DType, FloatDType } from "../src/dtype.ts";
import { DTYPE_SIZE } from "../src/dtype.ts";
import { numel, Tensor } from "../src/tensor.ts";
import type {
  CheckpointFormat,
  QuantizationSummary,
  TensorSpec,
} from "../src/io/formats/format.ts";
import { compressedTensorsFormat } from "../src/io/formats/compressed_tensors.ts";
import {
  COMPRESSED_TENSORS_VERSION,
  compressedTensorsConfig,
  compressedTensorsModules,
  detectCompressedTensors,
} from "../src/io/formats/compressed_tensors_config.ts";
import {
  packInt8Rows,
  unpackInt8Rows,
} from "../src/io/formats/compressed_tensors_packing.ts";
import {
  marlinShapeWarnings,
  vllmModuleWarnings,
} from "../src/io/formats/compressed_tensors_warnings.ts";
import {
  detectQuanto,
  QUANTO_QMAP_NAME,
  quantoFormat,
  quantoModules,
  quantoQmap,
  quantoWeightPaths,
} from "../src/io/formats/quanto.ts";
import { tinyqFormat } from "../src/io/formats/tinyq.ts";
import { quantizeRowsInt8 } from "../src/quant/quantize_rows.ts";
import { SafetensorsFile, writeSafetensors } from "../src/io/safetensors.ts";

// ---------------------------------------------------------------------------
// Helpers: drive a format the way the checkpoint writer does, and read the
// bytes back the way the spec says, without the code under test.

interface Stored {
  spec: TensorSpec;
  bytes: Uint8Array;
}

/** Encodes a whole layer in blocks of `block` rows; returns name → bytes. */
function encodeInBlocks(
  format: CheckpointFormat,
  path: string,
  q: Int8Array,
  scales: Float32Array,
  out: number,
  inF: number,
  sourceDtype: DType,
  block = out,
): Map<string, Stored> {
  const specs = format.linearTensors(path, out, inF, sourceDtype);
  const parts: Uint8Array[][] = specs.map(() => []);
  const starts = out === 0 ? [0] : [];
  for (let r = 0; r < out; r += Math.max(1, block)) starts.push(r);
  for (const rowStart of starts) {
    const rows = Math.min(Math.max(1, block), out - rowStart);
    const got = format.encodeLinear({
      path,
      outFeatures: out,
      inFeatures: inF,
      rowStart,
      rows,
      q: q.slice(rowStart * inF, (rowStart + rows) * inF),
      scales: scales.slice(rowStart, rowStart + rows),
      sourceDtype,
    });
    assert.equal(got.length, specs.length);
    got.forEach((b, i) => parts[i]!.push(b.slice()));
  }
  const stored = new Map<string, Stored>();
  specs.forEach((spec, i) => {
    const total = parts[i]!.reduce((n, b) => n + b.byteLength, 0);
    assert.equal(
      total,
      numel(spec.shape) * DTYPE_SIZE[spec.dtype],
      `${spec.name}: bytes produced must fill the declared shape`,
    );
    const bytes = new Uint8Array(total);
    let o = 0;
    for (const b of parts[i]!) {
      bytes.set(b, o);
      o += b.byteLength;
    }
    stored.set(spec.name, { spec, bytes });
  });
  return stored;
}

function reader(
  stored: Map<string, Stored>,
): (name: string) => Promise<Tensor | null> {
  return (name) => {
    const s = stored.get(name);
    return Promise.resolve(
      s ? Tensor.fromBytes(s.bytes, s.spec.shape, s.spec.dtype) : null,
    );
  };
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** compressed-tensors' unpack, as its docstring describes it. */
function specUnpack(packed: Uint8Array, out: number, inF: number): number[] {
  const dv = view(packed);
  const wordsPerRow = Math.ceil(inF / 4);
  const values: number[] = [];
  for (let r = 0; r < out; r++) {
    for (let c = 0; c < inF; c++) {
      const word = dv.getUint32(
        (r * wordsPerRow + Math.floor(c / 4)) * 4,
        true,
      );
      values.push(((word >>> (8 * (c % 4))) & 0xff) - 128);
    }
  }
  return values;
}

/** Bits of the padding bytes (unused lanes of each row's last word). */
function paddingBytes(packed: Uint8Array, out: number, inF: number): number[] {
  const wordsPerRow = Math.ceil(inF / 4);
  const pad: number[] = [];
  for (let r = 0; r < out; r++) {
    for (let c = inF; c < wordsPerRow * 4; c++) {
      pad.push(packed[r * wordsPerRow * 4 + c]!);
    }
  }
  return pad;
}

/** f32 → bf16 bits, round to nearest even, with plain integer arithmetic. */
function bf16BitsOf(x: number): number {
  const dv = new DataView(new ArrayBuffer(4));
  dv.setFloat32(0, x, true);
  const bits = dv.getUint32(0, true);
  let upper = bits >>> 16;
  const lower = bits & 0xffff;
  if (lower > 0x8000 || (lower === 0x8000 && (upper & 1) === 1)) upper += 1;
  return upper & 0xffff;
}

function bf16Value(bits: number): number {
  const dv = new DataView(new ArrayBuffer(4));
  dv.setUint32(0, bits << 16, true);
  return dv.getFloat32(0, true);
}

/** Scale values as stored, and as the spec says they must be. */
function storedScales(bytes: Uint8Array, dtype: DType): number[] {
  const dv = view(bytes);
  const size = DTYPE_SIZE[dtype];
  const n = bytes.byteLength / size;
  return Array.from({ length: n }, (_, i) => {
    switch (dtype) {
      case "f32":
        return dv.getFloat32(i * 4, true);
      case "f16":
        return dv.getFloat16(i * 2, true);
      case "bf16":
        return bf16Value(dv.getUint16(i * 2, true));
      default:
        throw new Error(`not a scale dtype: ${dtype}`);
    }
  });
}

function expectedScale(x: number, dtype: FloatDType): number {
  switch (dtype) {
    case "f32":
      return Math.fround(x);
    case "f16":
      return Math.f16round(x);
    case "bf16":
      return bf16Value(bf16BitsOf(x));
  }
}

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

function summary(over: Partial<QuantizationSummary> = {}): QuantizationSummary {
  return {
    library: "tinyq",
    version: "0.1.0",
    method: "w8a16",
    bits: 8,
    granularity: "per-channel",
    symmetric: true,
    modules: ["model.layers.0.mlp.down_proj", "model.layers.0.mlp.up_proj"],
    excluded: ["lm_head"],
    transposed: [],
    weightDtype: "bf16",
    ...over,
  };
}

const layerArb = fc.record({
  out: fc.integer({ min: 0, max: 6 }),
  inF: fc.integer({ min: 1, max: 13 }),
  dtype: fc.constantFrom<FloatDType>("f32", "f16", "bf16"),
  block: fc.integer({ min: 1, max: 4 }),
  seed: fc.integer(),
}).map(({ out, inF, dtype, block, seed }) => {
  let s = seed >>> 0;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
  const q = Int8Array.from({ length: out * inF }, () => (next() & 0xff) - 128);
  // Scales over many binades, including ones that round in bf16/f16.
  const scales = Float32Array.from(
    { length: out },
    () => (1 + (next() % 100000) / 7) * 2 ** (-(next() % 20)),
  );
  return { out, inF, dtype, block, q, scales };
});

// ---------------------------------------------------------------------------
// compressed-tensors: golden values by hand

Deno.test("packInt8Rows() matches compressed-tensors' docstring: [1, 2] packs to 33409", () => {
  // pack_to_int32's docstring: [1,2] -> [129,130] -> [129,130,0,0] -> 33409.
  assert.deepEqual([...packInt8Rows(new Int8Array([1, 2]), 1, 2)], [33409]);
});

Deno.test("compressed-tensors golden: a 2×5 int8 matrix packs to hand-computed words", () => {
  // row 0: q [1, 2, -1, -128, 127]  → u = q + 128 = [0x81, 0x82, 0x7f, 0x00, 0xff]
  // row 1: q [0, -2, 5, 100, -100]  → u = [0x80, 0x7e, 0x85, 0xe4, 0x1c]
  // element k of a group of four in bits [8k, 8k + 8); the fifth value opens
  // a second word padded with zeros.
  const q = new Int8Array([1, 2, -1, -128, 127, 0, -2, 5, 100, -100]);
  const scales = new Float32Array([0.5, 1 / 3]);
  const stored = encodeInBlocks(
    compressedTensorsFormat,
    "fc",
    q,
    scales,
    2,
    5,
    "bf16",
  );
  const packed = stored.get("fc.weight_packed")!;
  assert.equal(packed.spec.dtype, "i32");
  assert.deepEqual(packed.spec.shape, [2, 2]);
  const dv = view(packed.bytes);
  const words = [0, 1, 2, 3].map((i) => dv.getUint32(i * 4, true));
  assert.deepEqual(words, [0x007f8281, 0x000000ff, 0xe4857e80, 0x0000001c]);
  assert.equal(hex(packed.bytes), "81827f00ff000000807e85e41c000000");
  // The same words as the signed I32 values PyTorch would hold.
  assert.deepEqual(
    [...packInt8Rows(q, 2, 5)],
    [0x007f8281, 0x000000ff, 0xe4857e80 - 2 ** 32, 0x0000001c],
  );

  // weight_scale [2, 1] BF16: 0.5 = 0x3f00; 1/3 = f32 0x3eaaaaab, whose low
  // half 0xaaab is above the halfway point, so it rounds up to 0x3eab.
  const scale = stored.get("fc.weight_scale")!;
  assert.equal(scale.spec.dtype, "bf16");
  assert.deepEqual(scale.spec.shape, [2, 1]);
  assert.equal(hex(scale.bytes), "003fab3e");

  // weight_shape I64 [2] = [out, in].
  const shape = stored.get("fc.weight_shape")!;
  assert.equal(shape.spec.dtype, "i64");
  assert.deepEqual(shape.spec.shape, [2]);
  assert.equal(hex(shape.bytes), "0200000000000000" + "0500000000000000");
});

Deno.test("unpackInt8Rows() drops the padding and restores every int8 value", () => {
  const q = Int8Array.from(
    { length: 3 * 7 },
    (_, i) => ((i * 37) & 0xff) - 128,
  );
  assert.deepEqual(unpackInt8Rows(packInt8Rows(q, 3, 7), 3, 7), q);
  // A view at an odd byte offset takes the byte-wise path: same words.
  const q24 = Int8Array.from({ length: 24 }, (_, i) => ((i * 53) & 0xff) - 128);
  const shifted = new Int8Array(1 + 24);
  shifted.set(q24, 1);
  assert.deepEqual(
    packInt8Rows(shifted.subarray(1), 3, 8),
    packInt8Rows(q24, 3, 8),
  );
  assert.deepEqual(
    specUnpack(
      new Uint8Array(packInt8Rows(shifted.subarray(1), 3, 8).buffer),
      3,
      8,
    ),
    [...q24],
  );
  assert.throws(
    () => unpackInt8Rows(new Int32Array(3), 2, 5),
    /words holds 3 values/,
  );
  assert.throws(() => packInt8Rows(new Int8Array(9), 2, 5), /q holds 9 values/);
});

// ---------------------------------------------------------------------------
// compressed-tensors: properties against the independent reading

Deno.test("compressed-tensors: every int8 value, padding byte and scale reads back per the spec", () => {
  fc.assert(
    fc.property(layerArb, ({ out, inF, dtype, block, q, scales }) => {
      const stored = encodeInBlocks(
        compressedTensorsFormat,
        "m.proj",
        q,
        scales,
        out,
        inF,
        dtype,
        block,
      );
      assert.deepEqual(
        [...stored.keys()],
        ["m.proj.weight_packed", "m.proj.weight_scale", "m.proj.weight_shape"],
      );
      const packed = stored.get("m.proj.weight_packed")!;
      assert.deepEqual(packed.spec.shape, [out, Math.ceil(inF / 4)]);
      assert.deepEqual(specUnpack(packed.bytes, out, inF), [...q]);
      assert.ok(paddingBytes(packed.bytes, out, inF).every((b) => b === 0));

      const scale = stored.get("m.proj.weight_scale")!;
      assert.equal(scale.spec.dtype, dtype);
      assert.deepEqual(scale.spec.shape, [out, 1]);
      assert.deepEqual(
        storedScales(scale.bytes, dtype),
        [...scales].map((s) => expectedScale(s, dtype)),
      );

      const shape = view(stored.get("m.proj.weight_shape")!.bytes);
      assert.deepEqual(
        [shape.getBigInt64(0, true), shape.getBigInt64(8, true)],
        [BigInt(out), BigInt(inF)],
      );
    }),
    { numRuns: 200 },
  );
});

Deno.test("compressed-tensors: decodeLinear() round-trips q exactly and the scales as stored", async () => {
  await fc.assert(
    fc.asyncProperty(
      layerArb,
      async ({ out, inF, dtype, block, q, scales }) => {
        const stored = encodeInBlocks(
          compressedTensorsFormat,
          "fc",
          q,
          scales,
          out,
          inF,
          dtype,
          block,
        );
        const d = await compressedTensorsFormat.decodeLinear(
          "fc",
          reader(stored),
        );
        assert.deepEqual([d.outFeatures, d.inFeatures], [out, inF]);
        assert.deepEqual(d.q, q);
        assert.deepEqual(
          [...d.scales],
          [...scales].map((s) => expectedScale(s, dtype)),
        );
        assert.equal(d.zeroPoints, null);
      },
    ),
    { numRuns: 100 },
  );
});

Deno.test("compressed-tensors: dequantized floats equal TinyQ's (f32) and differ only by the scale's rounding (bf16)", async () => {
  const out = 5;
  const inF = 9;
  const w = Float32Array.from(
    { length: out * inF },
    (_, i) => Math.sin(i * 1.7) * (1 + (i % 5)),
  );
  const { q, scales } = quantizeRowsInt8(w, "f32", out, inF);
  for (const dtype of ["f32", "bf16"] as const) {
    const stored = encodeInBlocks(
      compressedTensorsFormat,
      "fc",
      q,
      scales,
      out,
      inF,
      dtype,
    );
    const d = await compressedTensorsFormat.decodeLinear("fc", reader(stored));
    for (let r = 0; r < out; r++) {
      for (let c = 0; c < inF; c++) {
        const ours = Math.fround(
          q[r * inF + c]! * expectedScale(scales[r]!, dtype),
        );
        const theirs = Math.fround(d.q[r * inF + c]! * d.scales[r]!);
        assert.equal(theirs, ours);
        if (dtype === "f32") {
          assert.equal(theirs, Math.fround(q[r * inF + c]! * scales[r]!));
        }
      }
    }
  }
});

Deno.test("compressed-tensors: decodeLinear() names what is missing or unsupported", async () => {
  const q = new Int8Array(2 * 8).fill(3);
  const scales = new Float32Array([1, 2]);
  const base = encodeInBlocks(
    compressedTensorsFormat,
    "fc",
    q,
    scales,
    2,
    8,
    "f16",
  );
  const without = (name: string) => {
    const m = new Map(base);
    m.delete(name);
    return reader(m);
  };
  await assert.rejects(
    compressedTensorsFormat.decodeLinear("fc", without("fc.weight_shape")),
    /"fc" is listed as quantized but has no "fc.weight_shape"/,
  );
  await assert.rejects(
    compressedTensorsFormat.decodeLinear("fc", without("fc.weight_scale")),
    /no "fc.weight_scale"/,
  );

  const withExtra = (name: string, t: Tensor) => (n: string) =>
    n === name ? Promise.resolve(t) : reader(base)(n);
  await assert.rejects(
    compressedTensorsFormat.decodeLinear(
      "fc",
      withExtra("fc.weight_zero_point", new Tensor(new Int32Array(2), [1, 2])),
    ),
    /"fc.weight_zero_point" is present/,
  );
  // Group-wise scales [out, groups] are not one scale per row.
  await assert.rejects(
    compressedTensorsFormat.decodeLinear(
      "fc",
      withExtra("fc.weight_scale", new Tensor(new Float32Array(4), [2, 2])),
    ),
    /"fc.weight_scale" has shape \[2, 2\]; TinyQ reads one scale per output row/,
  );
  // weight_shape that disagrees with the packed words.
  await assert.rejects(
    compressedTensorsFormat.decodeLinear(
      "fc",
      withExtra(
        "fc.weight_shape",
        new Tensor(new BigInt64Array([2n, 9n]), [2]),
      ),
    ),
    /"fc.weight_packed" has shape \[2, 2\], but "fc.weight_shape" \[2, 9\] needs \[2, 3\]/,
  );
  // An I32 weight_shape (what the compressor declares) is read as well.
  const d = await compressedTensorsFormat.decodeLinear(
    "fc",
    withExtra("fc.weight_shape", new Tensor(new Int32Array([2, 8]), [2])),
  );
  assert.deepEqual([d.outFeatures, d.inFeatures], [2, 8]);
});

// ---------------------------------------------------------------------------
// compressed-tensors: config.json, detection, serving warnings

Deno.test("compressedTensorsConfig() writes the block vLLM selects CompressedTensorsWNA16 from", () => {
  const block = compressedTensorsConfig(
    summary({ excluded: ["lm_head", "model.layers.0.mlp.gate_proj"] }),
  );
  assert.deepEqual(JSON.parse(JSON.stringify(block)), {
    config_groups: {
      group_0: {
        input_activations: null,
        output_activations: null,
        targets: ["Linear"],
        weights: {
          actorder: null,
          block_structure: null,
          dynamic: false,
          group_size: null,
          num_bits: 8,
          observer: "minmax",
          observer_kwargs: {},
          strategy: "channel",
          symmetric: true,
          type: "int",
        },
      },
    },
    format: "pack-quantized",
    global_compression_ratio: null,
    ignore: ["lm_head", "model.layers.0.mlp.gate_proj"],
    kv_cache_scheme: null,
    quant_method: "compressed-tensors",
    quantization_status: "compressed",
    version: COMPRESSED_TENSORS_VERSION,
  });
  // Sorted keys, as transformers' config.to_json_string(sort_keys=True).
  const keys = Object.keys(block);
  assert.deepEqual(keys, [...keys].sort());
  assert.equal(
    compressedTensorsFormat.configBlock(summary()).quant_method,
    "compressed-tensors",
  );
  assert.deepEqual(compressedTensorsFormat.extraFiles(summary()), {});
});

Deno.test("compressedTensorsConfig() refuses what pack-quantized int8 channel cannot describe", () => {
  assert.throws(
    () => compressedTensorsConfig(summary({ symmetric: false })),
    /--format compressed-tensors writes 8-bit symmetric per-channel weights/,
  );
  assert.throws(() => compressedTensorsConfig(summary({ bits: 4 })), /4-bit/);
});

Deno.test("detectCompressedTensors() reads TinyQ's exports and other tools' pack-quantized int8 checkpoints", () => {
  const s = summary({ transposed: ["h.0.attn.c_attn"] });
  const metadata = compressedTensorsFormat.fileMetadata(s);
  const config = { quantization_config: compressedTensorsConfig(s) };
  // Our own export: the full summary comes back from __metadata__.
  assert.deepEqual(compressedTensorsFormat.detect(metadata, config), s);
  assert.deepEqual(compressedTensorsFormat.detect(metadata, null), s);
  // Another tool's checkpoint: what config.json says.
  const foreign = detectCompressedTensors(null, {
    quantization_config: {
      ...compressedTensorsConfig(s),
      ignore: ["lm_head", "re:.*mlp\\.gate$"],
      version: "0.9.1",
    },
  });
  assert.deepEqual(foreign, {
    library: "compressed-tensors",
    version: "0.9.1",
    method: "w8a16",
    bits: 8,
    granularity: "per-channel",
    symmetric: true,
    modules: [],
    excluded: ["lm_head", "re:.*mlp\\.gate$"],
    transposed: [],
  });
  // A minimal hand-written group (defaults filled in by QuantizationArgs).
  assert.ok(detectCompressedTensors(null, {
    quantization_config: {
      quant_method: "compressed-tensors",
      format: "pack-quantized",
      config_groups: {
        group_0: {
          targets: ["Linear"],
          weights: { num_bits: 8, strategy: "channel" },
        },
      },
    },
  }));
  assert.equal(detectCompressedTensors(null, { model_type: "llama" }), null);
  assert.equal(detectCompressedTensors(null, null), null);
  // The native and quanto readers do not claim a compressed-tensors export.
  assert.equal(tinyqFormat.detect(metadata, null), null);
  assert.equal(quantoFormat.detect(metadata, null), null);
});

Deno.test("detectCompressedTensors() names the compressed-tensors variants TinyQ does not read", () => {
  const ct = (
    over: Record<string, unknown>,
    weights: Record<string, unknown> = {},
  ) => ({
    quantization_config: {
      quant_method: "compressed-tensors",
      format: "pack-quantized",
      config_groups: {
        group_0: {
          targets: ["Linear"],
          weights: {
            num_bits: 8,
            type: "int",
            symmetric: true,
            strategy: "channel",
            ...weights,
          },
          input_activations: null,
        },
      },
      ...over,
    },
  });
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      ct({}, { num_bits: 4, strategy: "group", group_size: 256 }),
      /has 4-bit group-wise weights \(group_size 256\); TinyQ reads 4-bit groups of 32, 64 or 128/,
    ],
    [ct({}, { num_bits: 2 }), /has 2-bit int weights/],
    [
      ct({}, { strategy: "group", group_size: 128 }),
      /has group-wise weights \(group_size 128\)/,
    ],
    [ct({}, { symmetric: false }), /has asymmetric weights/],
    [ct({}, { type: "float" }), /has 8-bit float weights/],
    [
      ct({ format: "int-quantized" }),
      /format "int-quantized" is not supported/,
    ],
    [
      ct({ format: "naive-quantized" }),
      /format "naive-quantized" is not supported/,
    ],
    [ct({ config_groups: { W8A16: ["Linear"] } }), /"W8A16" is a preset name/],
    [
      ct({
        config_groups: {
          group_0: {
            targets: ["Linear"],
            weights: { num_bits: 8, strategy: "channel" },
            input_activations: {
              num_bits: 8,
              strategy: "token",
              dynamic: true,
            },
          },
        },
      }),
      /quantizes activations/,
    ],
  ];
  for (const [config, message] of cases) {
    assert.throws(() => detectCompressedTensors(null, config), message);
    assert.throws(
      () => detectCompressedTensors(null, config),
      /config\.json quantization_config/,
    );
  }
});

Deno.test("compressedTensorsModules() lists the paths that hold weight_packed", () => {
  assert.deepEqual(
    compressedTensorsModules([
      "model.layers.1.mlp.up_proj.weight_packed",
      "model.layers.1.mlp.up_proj.weight_scale",
      "model.layers.0.self_attn.q_proj.weight_packed",
      "lm_head.weight",
      ".weight_packed",
    ]),
    ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.up_proj"],
  );
  assert.deepEqual(compressedTensorsFormat.storedNames("fc"), [
    "fc.weight_packed",
    "fc.weight",
    "fc.weight_scale",
    "fc.weight_shape",
    "fc.weight_zero_point",
    "fc.weight_g_idx",
  ]);
});

Deno.test("marlinShapeWarnings() lists exactly the layers with out % 64 or in % 128 not zero", () => {
  const w = marlinShapeWarnings([
    { path: "a", outFeatures: 64, inFeatures: 128 },
    { path: "b", outFeatures: 4096, inFeatures: 11000 },
    { path: "c", outFeatures: 65, inFeatures: 128 },
    { path: "d", outFeatures: 64, inFeatures: 130 },
    { path: "e", outFeatures: 2, inFeatures: 5 },
    { path: "f", outFeatures: 11008, inFeatures: 4096 },
  ]);
  assert.deepEqual(w.map((x) => x.path), ["b", "c", "d", "e"]);
  assert.match(
    w[0]!.message,
    /^b \[4096, 11000\]: in 11000 is not a multiple of 128;/,
  );
  assert.match(w[1]!.message, /out 65 is not a multiple of 64; vLLM's Marlin/);
  assert.match(
    w[3]!.message,
    /out 2 is not a multiple of 64 and in 5 is not a multiple of 128/,
  );
  fc.assert(
    fc.property(fc.nat(5000), fc.nat(5000), (o, i) => {
      const listed =
        marlinShapeWarnings([{ path: "x", outFeatures: o, inFeatures: i }])
          .length;
      assert.equal(listed, o % 64 !== 0 || i % 128 !== 0 ? 1 : 0);
    }),
  );
});

Deno.test("vllmModuleWarnings() flags a quantized lm_head and fused projections quantized in part", () => {
  const w = vllmModuleWarnings(
    [
      "lm_head",
      "model.layers.0.self_attn.q_proj",
      "model.layers.0.self_attn.k_proj",
      "model.layers.0.mlp.up_proj",
      "model.layers.1.self_attn.q_proj",
      "model.layers.1.self_attn.k_proj",
      "model.layers.1.self_attn.v_proj",
      "model.layers.1.mlp.gate_proj",
      "model.layers.1.mlp.up_proj",
    ],
    [
      "model.layers.0.self_attn.v_proj",
      "model.layers.0.mlp.gate_proj",
      "model.layers.2.self_attn.q_proj",
    ],
  );
  assert.deepEqual(w.map((x) => x.path), [
    "lm_head",
    "model.layers.0.self_attn",
    "model.layers.0.mlp",
  ]);
  assert.match(
    w[1]!.message,
    /q_proj, k_proj quantized but v_proj in float; vLLM fuses q_proj\/k_proj\/v_proj/,
  );
  assert.match(w[2]!.message, /up_proj quantized but gate_proj in float/);
  assert.deepEqual(vllmModuleWarnings(["a.fc1"], ["lm_head"]), []);
});

// ---------------------------------------------------------------------------
// optimum-quanto

Deno.test("quanto: tensors are weight._data I8, weight._scale [out, 1] and 0-d activation scales of 1", () => {
  fc.assert(
    fc.property(layerArb, ({ out, inF, dtype, block, q, scales }) => {
      const stored = encodeInBlocks(
        quantoFormat,
        "m.fc",
        q,
        scales,
        out,
        inF,
        dtype,
        block,
      );
      assert.deepEqual(
        [...stored.values()].map((
          s,
        ) => [s.spec.name, s.spec.dtype, s.spec.shape]),
        [
          ["m.fc.weight._data", "i8", [out, inF]],
          ["m.fc.weight._scale", dtype, [out, 1]],
          ["m.fc.input_scale", dtype, []],
          ["m.fc.output_scale", dtype, []],
        ],
      );
      const data = view(stored.get("m.fc.weight._data")!.bytes);
      assert.deepEqual(
        Array.from({ length: out * inF }, (_, i) => data.getInt8(i)),
        [...q],
      );
      assert.deepEqual(
        storedScales(stored.get("m.fc.weight._scale")!.bytes, dtype),
        [...scales].map((s) => expectedScale(s, dtype)),
      );
      for (const name of ["m.fc.input_scale", "m.fc.output_scale"]) {
        assert.deepEqual(storedScales(stored.get(name)!.bytes, dtype), [1]);
      }
    }),
    { numRuns: 200 },
  );
});

Deno.test("quanto golden: 0-d scales of 1 are 0x3f80 (bf16), 0x3c00 (f16), 0x3f800000 (f32)", () => {
  const golden: [FloatDType, string][] = [["bf16", "803f"], ["f16", "003c"], [
    "f32",
    "0000803f",
  ]];
  for (const [dtype, bytes] of golden) {
    const stored = encodeInBlocks(
      quantoFormat,
      "fc",
      new Int8Array([-128, 127]),
      new Float32Array([0.25]),
      1,
      2,
      dtype,
    );
    assert.equal(hex(stored.get("fc.input_scale")!.bytes), bytes);
    assert.equal(hex(stored.get("fc.output_scale")!.bytes), bytes);
    assert.equal(hex(stored.get("fc.weight._data")!.bytes), "807f");
  }
});

Deno.test("quanto: decodeLinear() round-trips q exactly and the scales as stored", async () => {
  await fc.assert(
    fc.asyncProperty(
      layerArb,
      async ({ out, inF, dtype, block, q, scales }) => {
        const stored = encodeInBlocks(
          quantoFormat,
          "fc",
          q,
          scales,
          out,
          inF,
          dtype,
          block,
        );
        const d = await quantoFormat.decodeLinear("fc", reader(stored));
        assert.deepEqual([d.outFeatures, d.inFeatures], [out, inF]);
        assert.deepEqual(d.q, q);
        assert.deepEqual(
          [...d.scales],
          [...scales].map((s) => expectedScale(s, dtype)),
        );
      },
    ),
    { numRuns: 100 },
  );
  await assert.rejects(
    quantoFormat.decodeLinear("fc", () => Promise.resolve(null)),
    /"fc" is listed as quantized but has no "fc.weight._data"/,
  );
  await assert.rejects(
    quantoFormat.decodeLinear("fc", (n) =>
      Promise.resolve(
        n.endsWith("_data")
          ? new Tensor(new Uint8Array(4), [2, 2], "u8")
          : null,
      )),
    /"fc.weight._data" must be I8 \[out, in\] \(qint8\), got U8 \[2, 2\]/,
  );
});

Deno.test("quanto: quanto_qmap.json maps quantized modules to qint8, as json.dump(indent=4) writes it", () => {
  const s = summary();
  const files = quantoFormat.extraFiles(s);
  assert.deepEqual(Object.keys(files), [QUANTO_QMAP_NAME]);
  assert.equal(
    files[QUANTO_QMAP_NAME],
    [
      "{",
      '    "model.layers.0.mlp.down_proj": {',
      '        "weights": "qint8",',
      '        "activations": "none"',
      "    },",
      '    "model.layers.0.mlp.up_proj": {',
      '        "weights": "qint8",',
      '        "activations": "none"',
      "    }",
      "}",
    ].join("\n"),
  );
  // Modules left in float are not in the map (quanto lists only QModules).
  assert.equal("lm_head" in quantoQmap(s), false);
  // No quantization_config: quanto writes none.
  assert.deepEqual(quantoFormat.configBlock(s), {});
  assert.throws(
    () => quantoQmap(summary({ symmetric: false })),
    /--format quanto/,
  );
});

Deno.test("quanto: detection from TinyQ's metadata or from a quanto_qmap.json", () => {
  const s = summary({ weightDtype: "f16" });
  const metadata = quantoFormat.fileMetadata(s);
  assert.deepEqual(quantoFormat.detect(metadata, null), s);
  assert.equal(tinyqFormat.detect(metadata, null), null);
  assert.equal(compressedTensorsFormat.detect(metadata, null), null);
  assert.equal(quantoFormat.detect(null, { model_type: "llama" }), null);

  const qmap = JSON.stringify({
    "model.decoder.layers.0.fc1": { weights: "qint8", activations: "none" },
    "lm_head": { weights: "none", activations: "none" },
    "model.decoder.layers.0.fc2": { weights: "qint8", activations: "none" },
  });
  assert.deepEqual(detectQuanto(null, qmap), {
    library: "optimum-quanto",
    version: "unknown",
    method: "w8a16",
    bits: 8,
    granularity: "per-channel",
    symmetric: true,
    modules: ["model.decoder.layers.0.fc1", "model.decoder.layers.0.fc2"],
    excluded: [],
    transposed: [],
  });
  assert.throws(
    () => quantoModules('{"fc": {"weights": "qint4", "activations": "none"}}'),
    /quanto_qmap.json: "fc" has qint4 weights; TinyQ reads qint8/,
  );
  assert.throws(
    () => quantoModules('{"fc": {"weights": "qint8", "activations": "qint8"}}'),
    /"fc" quantizes activations \(qint8\)/,
  );
  assert.throws(
    () => quantoModules("[1]"),
    /quanto_qmap.json is not a JSON object/,
  );
  assert.throws(() => quantoModules("{"), /quanto_qmap.json is not JSON/);
  assert.deepEqual(
    quantoWeightPaths([
      "a.weight._data",
      "a.weight._scale",
      "a.input_scale",
      "b.weight",
    ]),
    ["a"],
  );
});

// ---------------------------------------------------------------------------
// A real safetensors file on disk, read back through its raw header

Deno.test("compressed-tensors export written to a safetensors file has I32/BF16/I64 entries and decodes back", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = 3;
    const inF = 6;
    const w = Float32Array.from({ length: out * inF }, (_, i) => (i - 7) / 3);
    const { q, scales } = quantizeRowsInt8(w, "f32", out, inF);
    const stored = encodeInBlocks(
      compressedTensorsFormat,
      "fc",
      q,
      scales,
      out,
      inF,
      "bf16",
      2,
    );
    const file = `${dir}/model.safetensors`;
    const s = summary({ modules: ["fc"], excluded: [] });
    await writeSafetensors(
      file,
      [...stored.values()].map(({ spec, bytes }) => ({
        name: spec.name,
        dtype: spec.dtype,
        shape: spec.shape,
        byteLength: bytes.byteLength,
        bytes: () => bytes,
      })),
      { format: "pt", ...compressedTensorsFormat.fileMetadata(s) },
    );

    // The header as the safetensors spec defines it: u64 LE length, JSON.
    const raw = await Deno.readFile(file);
    const n = Number(view(raw).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(raw.subarray(8, 8 + n)));
    const entry = (name: string) =>
      header[name] as {
        dtype: string;
        shape: number[];
        data_offsets: [number, number];
      };
    assert.deepEqual(
      [entry("fc.weight_packed").dtype, entry("fc.weight_packed").shape],
      ["I32", [3, 2]],
    );
    assert.deepEqual([
      entry("fc.weight_scale").dtype,
      entry("fc.weight_scale").shape,
    ], ["BF16", [3, 1]]);
    assert.deepEqual([
      entry("fc.weight_shape").dtype,
      entry("fc.weight_shape").shape,
    ], ["I64", [2]]);
    const [b, e] = entry("fc.weight_packed").data_offsets;
    assert.deepEqual(specUnpack(raw.subarray(8 + n + b, 8 + n + e), out, inF), [
      ...q,
    ]);

    const f = await SafetensorsFile.open(file);
    try {
      assert.deepEqual(
        compressedTensorsFormat.detect(f.metadata, null)?.modules,
        ["fc"],
      );
      const d = await compressedTensorsFormat.decodeLinear(
        "fc",
        (name) => f.get(name) ? f.read(name) : Promise.resolve(null),
      );
      assert.deepEqual(d.q, q);
      assert.deepEqual(
        [...d.scales],
        [...scales].map((x) => expectedScale(x, "bf16")),
      );
    } finally {
      f.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
