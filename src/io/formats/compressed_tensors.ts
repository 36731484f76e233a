/**
 * The compressed-tensors `pack-quantized` layout for int8 weight-only,
 * symmetric, per-output-channel Linear layers: the W8A16 checkpoints vLLM
 * loads through its `CompressedTensorsWNA16` scheme (Marlin kernels).
 *
 * A quantized Linear at `P` is stored as
 * - `P.weight_packed`: I32 [out, ceil(in / 4)]. Element k of each group of
 *   four along the input dimension sits in bits [8k, 8k + 8) of its word as
 *   the unsigned byte q + 128; a row's last word is padded with zero bytes.
 * - `P.weight_scale`: [out, 1] in the float dtype of the original weight
 *   (f32/f16/bf16), our f32 scale rounded to nearest even.
 * - `P.weight_shape`: I64 [2] = [out, in].
 * - `P.bias` and every other tensor unchanged.
 *
 * `config.json` gains a `quantization_config` block
 * ({@linkcode compressedTensorsConfig}) whose `ignore` lists every Linear left
 * in float. `lm_head` always stays in float (vLLM loads it unquantized and
 * has no parameter for `lm_head.weight_packed`), and the layers vLLM may
 * refuse are warned about ({@linkcode marlinShapeWarnings},
 * {@linkcode vllmModuleWarnings}). GPT-2's Conv1D weights are stored in Linear
 * orientation, as vLLM's GPT-2 loader transposes only tensors named `.weight`.
 *
 * Scales: compressed-tensors' own observer computes absmax / 127.5 and uses
 * the range [-128, 127]; TinyQ writes absmax / 127 with the same range. The
 * format only says that a weight is `q · scale`, so a reader (vLLM, or
 * compressed-tensors' decompressor) using our scales reproduces exactly the
 * floats TinyQ dequantizes to, up to the rounding of the scale to the stored
 * dtype. Sources read: compressed-tensors `pack_quantized.py`,
 * `quant_args.py`, `quant_config.py`, `model_compressor.py`; vLLM
 * `compressed_tensors.py`, `compressed_tensors_wNa16.py`, `utils.py`.
 *
 * @module
 */

import { type DType, isFloatDType } from "../../dtype.ts";
import type { Tensor } from "../../tensor.ts";
import type {
  CheckpointFormat,
  DecodedLinear,
  DetectContext,
  FormatLayer,
  FormatWarning,
  QuantizationSummary,
  QuantizedRowsRecord,
  TensorSpec,
} from "./format.ts";
import {
  checkInt8Symmetric,
  exportMetadata,
  pathsWithSuffix,
  perRowScales,
  required,
  scaleBytes,
  scaleDtypeFor,
  summaryFromExportMetadata,
} from "./_export.ts";

/**
 * The compressed-tensors release whose serialization the config block
 * reproduces: the ten `QuantizationArgs` fields with `observer: "minmax"`,
 * without the later `scale_dtype`/`zp_dtype` (older releases forbid unknown
 * fields). Informational: compressed-tensors drops `version` when it parses
 * the block and vLLM never reads it.
 */
export const COMPRESSED_TENSORS_VERSION = "0.10.2";

const FORMAT = "compressed-tensors";

function checkRows(
  length: number,
  rows: number,
  cols: number,
  what: string,
): void {
  if (
    !Number.isSafeInteger(rows) || rows < 0 || !Number.isSafeInteger(cols) ||
    cols < 0
  ) {
    throw new RangeError(`Invalid shape [${rows}, ${cols}]`);
  }
  if (length !== rows * cols) {
    throw new RangeError(
      `${what} holds ${length} values, [${rows}, ${cols}] needs ${rows * cols}`,
    );
  }
}

/** dst[i] = src[i] ^ 0x80, four bytes at a time where both are aligned. */
function flipSignBits(src: Uint8Array, dst: Uint8Array): void {
  const n = src.length;
  const words = n >>> 2;
  if (src.byteOffset % 4 === 0 && dst.byteOffset % 4 === 0) {
    // Int32 views keep the XOR in V8's int32 fast path (a Uint32 result
    // above 2^31 would be boxed as a double).
    const s32 = new Int32Array(src.buffer, src.byteOffset, words);
    const d32 = new Int32Array(dst.buffer, dst.byteOffset, words);
    for (let i = 0; i < words; i++) d32[i] = s32[i]! ^ 0x80808080;
    for (let i = words * 4; i < n; i++) dst[i] = src[i]! ^ 0x80;
    return;
  }
  for (let i = 0; i < n; i++) dst[i] = src[i]! ^ 0x80;
}

/**
 * Packs int8 rows [rows, cols] into compressed-tensors' I32 words
 * [rows, ceil(cols / 4)]: element k of each group of four goes to bits
 * [8k, 8k + 8) as q + 128, and the last word of a row is padded with zero
 * bytes. The words' bytes (`new Uint8Array(words.buffer)`) are what the
 * safetensors file stores.
 *
 * @example The library's own docstring example: [1, 2] packs to 33409
 * ```ts
 * import { packInt8Rows } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...packInt8Rows(new Int8Array([1, 2]), 1, 2)], [33409]);
 * ```
 */
export function packInt8Rows(
  q: Int8Array,
  rows: number,
  cols: number,
): Int32Array {
  checkRows(q.length, rows, cols, "q");
  const wordsPerRow = Math.ceil(cols / 4);
  const out = new Int32Array(rows * wordsPerRow);
  const src = new Uint8Array(q.buffer, q.byteOffset, q.length);
  // Bits [8k, 8k + 8) of a word are its byte k on a little-endian host (every
  // platform Deno runs on, and safetensors' byte order), so packing is a byte
  // copy; XOR 0x80 turns a two's-complement byte q into the unsigned q + 128.
  const dst = new Uint8Array(out.buffer);
  if (cols % 4 === 0) {
    flipSignBits(src, dst);
    return out;
  }
  const rowBytes = wordsPerRow * 4;
  for (let r = 0; r < rows; r++) {
    const s = r * cols;
    const d = r * rowBytes;
    for (let c = 0; c < cols; c++) dst[d + c] = src[s + c]! ^ 0x80;
  }
  return out;
}

/**
 * Unpacks compressed-tensors' I32 words [rows, ceil(cols / 4)] back to int8
 * rows [rows, cols], dropping the padding.
 *
 * @example
 * ```ts
 * import { packInt8Rows, unpackInt8Rows } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const q = new Int8Array([-128, 127, 0, 5, -7]);
 * assert.deepEqual(unpackInt8Rows(packInt8Rows(q, 1, 5), 1, 5), q);
 * ```
 */
export function unpackInt8Rows(
  words: Int32Array,
  rows: number,
  cols: number,
): Int8Array {
  const wordsPerRow = Math.ceil(cols / 4);
  checkRows(words.length, rows, wordsPerRow, "words");
  const src = new Uint8Array(words.buffer, words.byteOffset, words.byteLength);
  const out = new Int8Array(rows * cols);
  const dst = new Uint8Array(out.buffer);
  if (cols % 4 === 0) {
    flipSignBits(src, dst);
    return out;
  }
  const rowBytes = wordsPerRow * 4;
  for (let r = 0; r < rows; r++) {
    const s = r * rowBytes;
    const d = r * cols;
    for (let c = 0; c < cols; c++) dst[d + c] = src[s + c]! ^ 0x80;
  }
  return out;
}

/**
 * The `quantization_config` block of `config.json` for a compressed-tensors
 * export: one config group targeting every `Linear`, with int8 symmetric
 * static per-channel weights and no activation quantization, and `ignore`
 * listing the Linear modules left in float. Keys are sorted as
 * transformers writes them.
 *
 * @example
 * ```ts
 * import { compressedTensorsConfig } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const block = compressedTensorsConfig({
 *   library: "tinyq", version: "0.1.0", method: "w8a16", bits: 8,
 *   granularity: "per-channel", symmetric: true,
 *   modules: ["model.layers.0.mlp.up_proj"], excluded: ["lm_head"], transposed: [],
 * });
 * assert.equal(block.format, "pack-quantized");
 * assert.deepEqual(block.ignore, ["lm_head"]);
 * ```
 */
export function compressedTensorsConfig(
  summary: QuantizationSummary,
): Record<string, unknown> {
  checkInt8Symmetric(FORMAT, summary);
  return {
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
    ignore: [...summary.excluded],
    kv_cache_scheme: null,
    quant_method: "compressed-tensors",
    quantization_status: "compressed",
    version: COMPRESSED_TENSORS_VERSION,
  };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Why a group's weight args are not int8 symmetric static per-channel, or null. */
function unsupportedWeights(w: unknown): string | null {
  if (!isRecord(w)) return "has no weights";
  const bits = w.num_bits ?? 8;
  const type = w.type ?? "int";
  const strategy = w.strategy ??
    (w.group_size === -1
      ? "channel"
      : w.group_size == null
      ? "tensor"
      : "group");
  if (bits !== 8 || type !== "int") return `has ${bits}-bit ${type} weights`;
  if (w.symmetric === false) return "has asymmetric weights";
  if (strategy !== "channel") {
    return `has ${strategy}-wise weights${
      w.group_size ? ` (group_size ${w.group_size})` : ""
    }`;
  }
  if (w.dynamic) return "has dynamic weights";
  if (w.actorder) return `uses actorder "${w.actorder}"`;
  return null;
}

/**
 * Recognises a compressed-tensors checkpoint TinyQ can read, from the
 * `__metadata__` of its safetensors files and its `config.json`. Returns null
 * when it is not compressed-tensors at all and throws (naming config.json)
 * when it is compressed-tensors in a variant TinyQ does not read: any format
 * but `pack-quantized`, or weights other than 8-bit int symmetric static
 * per-channel, or activation quantization. For a checkpoint another tool
 * wrote, `modules` is left empty: list them from the tensor names with
 * {@linkcode compressedTensorsModules}.
 *
 * @example
 * ```ts
 * import { compressedTensorsConfig, detectCompressedTensors } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const summary = {
 *   library: "tinyq", version: "0.1.0", method: "w8a16", bits: 8,
 *   granularity: "per-channel", symmetric: true,
 *   modules: [], excluded: ["lm_head"], transposed: [],
 * };
 * const config = { quantization_config: compressedTensorsConfig(summary) };
 * assert.deepEqual(detectCompressedTensors(null, config)?.excluded, ["lm_head"]);
 * assert.equal(detectCompressedTensors(null, { model_type: "llama" }), null);
 * ```
 */
export function detectCompressedTensors(
  metadata: Readonly<Record<string, string>> | null,
  config: Readonly<Record<string, unknown>> | null,
): QuantizationSummary | null {
  const own = summaryFromExportMetadata(FORMAT, metadata);
  const qc = config?.quantization_config;
  if (!isRecord(qc) || qc.quant_method !== "compressed-tensors") return own;
  const where = "config.json quantization_config";
  if (qc.format !== "pack-quantized") {
    throw new TypeError(
      `${where}: compressed-tensors format "${qc.format}" is not supported (TinyQ reads "pack-quantized" int8 weight-only)`,
    );
  }
  const groups = qc.config_groups;
  if (!isRecord(groups) || Object.keys(groups).length === 0) {
    throw new TypeError(`${where} has no config_groups`);
  }
  for (const [name, g] of Object.entries(groups)) {
    if (!isRecord(g)) {
      throw new TypeError(
        `${where}: config group "${name}" is a preset name; TinyQ reads explicit int8 per-channel groups`,
      );
    }
    const why = unsupportedWeights(g.weights) ??
      (g.input_activations || g.output_activations
        ? "quantizes activations"
        : null);
    if (why) {
      throw new TypeError(
        `${where}: config group "${name}" ${why}; TinyQ reads 8-bit symmetric per-channel weight-only groups`,
      );
    }
  }
  if (own) return own;
  const ignore = Array.isArray(qc.ignore)
    ? qc.ignore.filter((x) => typeof x === "string")
    : [];
  return {
    library: "compressed-tensors",
    version: typeof qc.version === "string" ? qc.version : "unknown",
    method: "w8a16",
    bits: 8,
    granularity: "per-channel",
    symmetric: true,
    modules: [],
    excluded: ignore,
    transposed: [],
  };
}

/**
 * The quantized Linear paths of a `pack-quantized` checkpoint: every tensor
 * name ending in `.weight_packed`, sorted.
 *
 * @example
 * ```ts
 * import { compressedTensorsModules } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const names = ["a.weight_packed", "a.weight_scale", "a.weight_shape", "b.weight"];
 * assert.deepEqual(compressedTensorsModules(names), ["a"]);
 * ```
 */
export function compressedTensorsModules(names: Iterable<string>): string[] {
  return pathsWithSuffix(names, ".weight_packed");
}

/**
 * The quantized layers whose shape vLLM's Marlin kernel (which runs int8
 * weight-only `pack-quantized` layers) refuses: it needs out % 64 == 0 and
 * in % 128 == 0 (`verify_marlin_supports_shape`). With tensor parallelism
 * each shard must pass the same test, so a layer listed here fails at every
 * parallel size and one not listed may still fail when split.
 *
 * @example
 * ```ts
 * import { marlinShapeWarnings } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const w = marlinShapeWarnings([
 *   { path: "ok", outFeatures: 128, inFeatures: 256 },
 *   { path: "odd", outFeatures: 100, inFeatures: 256 },
 * ]);
 * assert.deepEqual(w.map((x) => x.path), ["odd"]);
 * ```
 */
export function marlinShapeWarnings(
  layers: Iterable<FormatLayer>,
): FormatWarning[] {
  const out: FormatWarning[] = [];
  for (const l of layers) {
    const bad = [
      ...(l.outFeatures % 64 !== 0
        ? [`out ${l.outFeatures} is not a multiple of 64`]
        : []),
      ...(l.inFeatures % 128 !== 0
        ? [`in ${l.inFeatures} is not a multiple of 128`]
        : []),
    ];
    if (bad.length > 0) {
      out.push({
        path: l.path,
        message: `${l.path} [${l.outFeatures}, ${l.inFeatures}]: ${
          bad.join(" and ")
        }; vLLM's Marlin int8 kernel may refuse this layer`,
      });
    }
  }
  return out;
}

/** Projections vLLM fuses into one layer (qkv_proj, gate_up_proj). */
const FUSED_GROUPS: readonly (readonly string[])[] = [
  ["q_proj", "k_proj", "v_proj"],
  ["gate_proj", "up_proj"],
];

/**
 * Choices of which Linear layers to quantize that vLLM cannot load:
 * a quantized `lm_head` (vLLM builds it as an unquantized embedding and has no
 * parameter for `lm_head.weight_packed`), and projections vLLM fuses
 * (q/k/v_proj, gate/up_proj) quantized in part ("requires all to use the same
 * scheme").
 *
 * @example
 * ```ts
 * import { vllmModuleWarnings } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const w = vllmModuleWarnings(
 *   ["lm_head", "l.0.attn.q_proj", "l.0.attn.k_proj"],
 *   ["l.0.attn.v_proj"],
 * );
 * assert.deepEqual(w.map((x) => x.path), ["lm_head", "l.0.attn"]);
 * ```
 */
export function vllmModuleWarnings(
  modules: readonly string[],
  excluded: readonly string[],
): FormatWarning[] {
  const out: FormatWarning[] = [];
  for (const m of modules) {
    if (isLmHead(m)) {
      out.push({
        path: m,
        message:
          `${m} is quantized, but vLLM loads lm_head unquantized and will reject ${m}.weight_packed; exclude it`,
      });
    }
  }
  const quantized = new Set(modules);
  const float = new Set(excluded);
  const seen = new Set<string>();
  for (const group of FUSED_GROUPS) {
    for (const p of [...modules, ...excluded]) {
      const dot = p.lastIndexOf(".");
      const leaf = p.slice(dot + 1);
      if (!group.includes(leaf)) continue;
      const parent = p.slice(0, Math.max(dot, 0));
      const key = `${parent}\0${group.join()}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const entry = { q: [] as string[], f: [] as string[] };
      for (const member of group) {
        const full = parent ? `${parent}.${member}` : member;
        if (quantized.has(full)) entry.q.push(member);
        else if (float.has(full)) entry.f.push(member);
      }
      if (entry.q.length > 0 && entry.f.length > 0) {
        out.push({
          path: parent,
          message: `${parent}: ${entry.q.join(", ")} quantized but ${
            entry.f.join(", ")
          } in float; vLLM fuses ${
            group.join("/")
          } and requires one scheme for all`,
        });
      }
    }
  }
  return out;
}

function shapeBytes(out: number, inF: number): Uint8Array {
  return new Uint8Array(new BigInt64Array([BigInt(out), BigInt(inF)]).buffer);
}

function shapeValues(t: Tensor, name: string): [number, number] {
  if ((t.dtype !== "i64" && t.dtype !== "i32") || t.size !== 2) {
    throw new TypeError(
      `"${name}" must be I64 [2] = [out, in], got ${t.dtype.toUpperCase()} [${
        t.shape.join(", ")
      }]`,
    );
  }
  const [a, b] = Array.from(t.data as BigInt64Array | Int32Array, Number) as [
    number,
    number,
  ];
  if (!Number.isSafeInteger(a) || a < 0 || !Number.isSafeInteger(b) || b < 0) {
    throw new TypeError(`"${name}" holds an invalid shape [${a}, ${b}]`);
  }
  return [a, b];
}

/**
 * The compressed-tensors `pack-quantized` output format (W8A16: int8
 * weight-only, symmetric, per-channel, as vLLM serves it).
 *
 * @example The tensors of one quantized Linear, and the bytes of a row
 * ```ts
 * import { compressedTensorsFormat } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const specs = compressedTensorsFormat.linearTensors("mlp.up_proj", 1, 5, "bf16");
 * assert.deepEqual(specs.map((s) => [s.name, s.dtype, s.shape]), [
 *   ["mlp.up_proj.weight_packed", "i32", [1, 2]],
 *   ["mlp.up_proj.weight_scale", "bf16", [1, 1]],
 *   ["mlp.up_proj.weight_shape", "i64", [2]],
 * ]);
 * const [packed, scale, shape] = compressedTensorsFormat.encodeLinear({
 *   path: "mlp.up_proj", outFeatures: 1, inFeatures: 5, rowStart: 0, rows: 1,
 *   q: new Int8Array([1, 2, -1, -128, 127]), scales: new Float32Array([0.5]),
 *   sourceDtype: "bf16",
 * });
 * assert.deepEqual([...packed!], [129, 130, 127, 0, 255, 0, 0, 0]);
 * assert.deepEqual([...scale!], [0x00, 0x3f]);
 * assert.equal(shape!.byteLength, 16);
 * ```
 */
export const compressedTensorsFormat: CheckpointFormat = {
  name: FORMAT,

  linearTensors(
    path: string,
    out: number,
    inF: number,
    sourceDtype: DType,
  ): TensorSpec[] {
    return [
      {
        name: `${path}.weight_packed`,
        dtype: "i32",
        shape: [out, Math.ceil(inF / 4)],
      },
      {
        name: `${path}.weight_scale`,
        dtype: scaleDtypeFor(sourceDtype),
        shape: [out, 1],
      },
      { name: `${path}.weight_shape`, dtype: "i64", shape: [2] },
    ];
  },

  encodeLinear(r: QuantizedRowsRecord): Uint8Array[] {
    const words = packInt8Rows(r.q, r.rows, r.inFeatures);
    return [
      new Uint8Array(words.buffer, words.byteOffset, words.byteLength),
      scaleBytes(r.scales, scaleDtypeFor(r.sourceDtype)),
      // weight_shape is one whole tensor: it goes with the first block.
      r.rowStart === 0
        ? shapeBytes(r.outFeatures, r.inFeatures)
        : new Uint8Array(0),
    ];
  },

  fileMetadata(summary: QuantizationSummary): Record<string, string> {
    return exportMetadata(FORMAT, summary);
  },

  configBlock(summary: QuantizationSummary): Record<string, unknown> {
    return compressedTensorsConfig(summary);
  },

  extraFiles(): Record<string, string> {
    return {};
  },

  detect(metadata, config, context): QuantizationSummary | null {
    const summary = detectCompressedTensors(metadata, config);
    if (!summary || !context || summary.library === "tinyq") return summary;
    return withTensors(summary, context);
  },

  storedNames(path: string): string[] {
    return [
      `${path}.weight_packed`,
      `${path}.weight_scale`,
      `${path}.weight_shape`,
      `${path}.weight_zero_point`,
      `${path}.weight_g_idx`,
    ];
  },

  async decodeLinear(
    path: string,
    read: (name: string) => Promise<Tensor | null>,
  ): Promise<DecodedLinear> {
    const packedName = `${path}.weight_packed`;
    const packed = await required(read, packedName, path);
    const shapeName = `${path}.weight_shape`;
    const [out, inF] = shapeValues(
      await required(read, shapeName, path),
      shapeName,
    );
    if (packed.dtype !== "i32" || packed.ndim !== 2) {
      throw new TypeError(
        `"${packedName}" must be I32 [out, ceil(in / 4)], got ${packed.dtype.toUpperCase()} [${
          packed.shape.join(", ")
        }]`,
      );
    }
    if (packed.shape[0] !== out || packed.shape[1] !== Math.ceil(inF / 4)) {
      throw new TypeError(
        `"${packedName}" has shape [${
          packed.shape.join(", ")
        }], but "${shapeName}" [${out}, ${inF}] ` +
          `needs [${out}, ${Math.ceil(inF / 4)}] (int8, four values per word)`,
      );
    }
    for (const extra of ["weight_zero_point", "weight_g_idx"]) {
      if (await read(`${path}.${extra}`)) {
        throw new TypeError(
          `"${path}.${extra}" is present; TinyQ reads symmetric per-channel weights without ${extra}`,
        );
      }
    }
    const scaleName = `${path}.weight_scale`;
    const scales = perRowScales(
      await required(read, scaleName, path),
      out,
      scaleName,
    );
    return {
      q: unpackInt8Rows(packed.data as Int32Array, out, inF),
      scales,
      zeroPoints: null,
      outFeatures: out,
      inFeatures: inF,
    };
  },

  async linearShape(path, read): Promise<[number, number]> {
    const name = `${path}.weight_shape`;
    return shapeValues(await required(read, name, path), name);
  },

  keepFloat(layer: FormatLayer): string | null {
    return isLmHead(layer.path)
      ? "vLLM loads lm_head unquantized and has no parameter for lm_head.weight_packed"
      : null;
  },

  warnings(summary, layers): FormatWarning[] {
    return [
      ...vllmModuleWarnings(summary.modules, summary.excluded),
      ...marlinShapeWarnings(layers),
    ];
  },
};

function isLmHead(path: string): boolean {
  return path === "lm_head" || path.endsWith(".lm_head");
}

/**
 * A checkpoint another tool wrote: its quantized modules are the paths that
 * hold `weight_packed`, and its weights' dtype is that of the stored scales.
 */
function withTensors(
  summary: QuantizationSummary,
  context: DetectContext,
): QuantizationSummary {
  const modules = compressedTensorsModules(context.tensors.keys());
  const dtypes = new Set(
    modules.map((m) => context.tensors.get(`${m}.weight_scale`)?.dtype),
  );
  const only = dtypes.size === 1 ? [...dtypes][0] : undefined;
  return {
    ...summary,
    modules,
    ...(only && isFloatDType(only) ? { weightDtype: only } : {}),
  };
}
