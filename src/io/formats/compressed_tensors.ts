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
 * W4A16 (`--method w4a16`, what vLLM runs through the same WNA16 scheme) is
 * `pack-quantized` too, 4 bits and strategy `group`:
 * - `P.weight_packed`: I32 [out, in / 8], element k of each eight in bits
 *   [4k, 4k + 4) as the unsigned code q + 8 (byte for byte TinyQ's own
 *   `int4_weights`).
 * - `P.weight_scale`: [out, in / group] in the original weight's dtype.
 * - `P.weight_zero_point` (asymmetric only): I32 [ceil(out / 8), in / group],
 *   the 4-bit zero points packed along the output dimension (eight rows per
 *   word), as compressed-tensors' `pack_to_int32(…, packed_dim=0)`.
 * - `P.weight_shape`: I64 [2].
 *
 * W8A8 (`--method w8a8`) is `int-quantized`: `P.weight` I8 [out, in] and
 * `P.weight_scale` [out, 1], with `input_activations` int8 symmetric,
 * dynamic, strategy `token` in the config block — compressed-tensors' W8A8
 * preset, which vLLM runs on its int8 GEMM kernels.
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
  Int4RowsRecord,
  QuantizationSummary,
  QuantizedRowsRecord,
  TensorSpec,
  WeightScheme,
} from "./format.ts";
import type { Int4Weight } from "../../backend/cpu_lowbit.ts";
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

/** The three layouts an export takes. */
type Layout = "w8a16" | "w4a16" | "w8a8";

/**
 * Which layout a summary is written in, or a TypeError saying what the
 * format cannot record: W8A16/W8A32 → int8 `pack-quantized`; W4A16 → 4-bit
 * `pack-quantized` groups (symmetric or with zero points); W8A8 →
 * `int-quantized` with symmetric weights (what vLLM's int8 W8A8 kernels
 * take) and dynamic per-token activations.
 */
function layoutOf(s: QuantizationSummary): Layout {
  if (s.bits === 4) {
    if (!s.groupSize || s.granularity !== "group") {
      throw new TypeError(
        `--format ${FORMAT} writes 4-bit weights in groups; this checkpoint is 4-bit ${s.granularity}`,
      );
    }
    return "w4a16";
  }
  if (s.method === "w8a8" && s.bits === 8) {
    if (!s.symmetric || s.granularity !== "per-channel") {
      throw new TypeError(
        `--format ${FORMAT} writes W8A8 with symmetric per-channel int8 weights (what vLLM's int8 kernels take); drop --asymmetric`,
      );
    }
    return "w8a8";
  }
  checkInt8Symmetric(FORMAT, s);
  return "w8a16";
}

/**
 * The `quantization_config` block of `config.json` for a compressed-tensors
 * export: one config group targeting every `Linear`, and `ignore` listing
 * the Linear modules left in float. W8A16/W8A32: `pack-quantized` int8
 * symmetric static per-channel weights, no activation quantization; W4A16:
 * `pack-quantized` 4-bit weights, strategy `group` with the group size,
 * symmetric or not; W8A8: `int-quantized` int8 symmetric per-channel weights
 * and dynamic symmetric per-token int8 input activations. Keys are sorted as
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
  const layout = layoutOf(summary);
  const int4 = layout === "w4a16";
  return {
    config_groups: {
      group_0: {
        input_activations: layout === "w8a8"
          ? {
            actorder: null,
            block_structure: null,
            dynamic: true,
            group_size: null,
            num_bits: 8,
            observer: null,
            observer_kwargs: {},
            strategy: "token",
            symmetric: true,
            type: "int",
          }
          : null,
        output_activations: null,
        targets: ["Linear"],
        weights: {
          actorder: null,
          block_structure: null,
          dynamic: false,
          group_size: int4 ? summary.groupSize : null,
          num_bits: int4 ? 4 : 8,
          observer: "minmax",
          observer_kwargs: {},
          strategy: int4 ? "group" : "channel",
          symmetric: summary.symmetric,
          type: "int",
        },
      },
    },
    // Weight-only schemes are packed; with activation quantization
    // compressed-tensors (and vLLM) expect plain int8 `weight` tensors.
    format: layout === "w8a8" ? "int-quantized" : "pack-quantized",
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

/** What TinyQ makes of one config group: a method and how its weights are stored. */
interface GroupScheme {
  method: "w8a16" | "w4a16" | "w8a8";
  bits: 8 | 4;
  groupSize: number | null;
  symmetric: boolean;
}

/**
 * The scheme of a config group in `format`, or why TinyQ cannot read it:
 * `pack-quantized` int8 symmetric per-channel or 4-bit group-wise
 * (32/64/128, with or without zero points) weight-only groups, and
 * `int-quantized` int8 symmetric per-channel weights with dynamic symmetric
 * per-token int8 input activations (W8A8).
 */
function groupScheme(
  g: Record<string, unknown>,
  format: unknown,
): GroupScheme | string {
  const w = g.weights;
  if (!isRecord(w)) return "has no weights";
  const bits = w.num_bits ?? 8;
  const type = w.type ?? "int";
  const strategy = w.strategy ??
    (w.group_size === -1
      ? "channel"
      : w.group_size == null
      ? "tensor"
      : "group");
  if ((bits !== 8 && bits !== 4) || type !== "int") {
    return `has ${bits}-bit ${type} weights`;
  }
  if (w.dynamic) return "has dynamic weights";
  if (w.actorder) return `uses actorder "${w.actorder}"`;
  if (g.output_activations) return "quantizes output activations";
  const symmetric = w.symmetric !== false;
  if (bits === 4) {
    const size = w.group_size;
    if (strategy !== "group" || ![32, 64, 128].includes(size as number)) {
      return `has 4-bit ${strategy}-wise weights${
        size ? ` (group_size ${size})` : ""
      }; TinyQ reads 4-bit groups of 32, 64 or 128`;
    }
    if (format !== "pack-quantized") {
      return `has 4-bit weights, for which format "${format}" is not supported`;
    }
    if (g.input_activations) return "quantizes activations of 4-bit layers";
    return {
      method: "w4a16",
      bits: 4,
      groupSize: size as number,
      symmetric,
    };
  }
  if (strategy !== "channel") {
    return `has ${strategy}-wise weights${
      w.group_size ? ` (group_size ${w.group_size})` : ""
    }`;
  }
  if (!symmetric) return "has asymmetric weights";
  const a = g.input_activations;
  if (!a) {
    return format === "pack-quantized"
      ? { method: "w8a16", bits: 8, groupSize: null, symmetric }
      : `is weight-only int8, for which format "${format}" is not supported (vLLM serves it pack-quantized)`;
  }
  if (
    !isRecord(a) || (a.num_bits ?? 8) !== 8 || (a.type ?? "int") !== "int" ||
    a.strategy !== "token" || a.dynamic !== true || a.symmetric === false
  ) {
    return "quantizes activations other than int8 dynamic symmetric per token";
  }
  return format === "int-quantized"
    ? { method: "w8a8", bits: 8, groupSize: null, symmetric }
    : `quantizes activations (W8A8), which TinyQ reads in format "int-quantized" only`;
}

/**
 * Recognises a compressed-tensors checkpoint TinyQ can read, from the
 * `__metadata__` of its safetensors files and its `config.json`. Returns null
 * when it is not compressed-tensors at all and throws (naming config.json)
 * when it is compressed-tensors in a variant TinyQ does not read: formats
 * other than `pack-quantized` (int8 symmetric per-channel or 4-bit groups of
 * 32/64/128, weight-only) and `int-quantized` (W8A8: int8 symmetric
 * per-channel weights, dynamic symmetric per-token int8 activations), or
 * config groups of different schemes. For a checkpoint another tool
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
  if (qc.format !== "pack-quantized" && qc.format !== "int-quantized") {
    throw new TypeError(
      `${where}: compressed-tensors format "${qc.format}" is not supported (TinyQ reads "pack-quantized" weight-only int8/int4 and "int-quantized" W8A8)`,
    );
  }
  const groups = qc.config_groups;
  if (!isRecord(groups) || Object.keys(groups).length === 0) {
    throw new TypeError(`${where} has no config_groups`);
  }
  let scheme: GroupScheme | null = null;
  for (const [name, g] of Object.entries(groups)) {
    if (!isRecord(g)) {
      throw new TypeError(
        `${where}: config group "${name}" is a preset name; TinyQ reads explicit groups`,
      );
    }
    const s = groupScheme(g, qc.format);
    if (typeof s === "string") {
      throw new TypeError(
        `${where}: config group "${name}" ${s}; TinyQ reads pack-quantized int8 per-channel or 4-bit group weight-only groups and int-quantized W8A8 (int8 dynamic per-token activations)`,
      );
    }
    if (
      scheme && (scheme.method !== s.method ||
        scheme.groupSize !== s.groupSize || scheme.symmetric !== s.symmetric)
    ) {
      throw new TypeError(
        `${where}: config groups use different schemes; TinyQ reads one scheme per checkpoint`,
      );
    }
    scheme = s;
  }
  if (own) return own;
  const ignore = Array.isArray(qc.ignore)
    ? qc.ignore.filter((x) => typeof x === "string")
    : [];
  const s = scheme!;
  return {
    library: "compressed-tensors",
    version: typeof qc.version === "string" ? qc.version : "unknown",
    method: s.method,
    bits: s.bits,
    granularity: s.bits === 4 ? "group" : "per-channel",
    symmetric: s.symmetric,
    ...(s.groupSize !== null ? { groupSize: s.groupSize } : {}),
    ...(s.method === "w8a8" ? { activations: "int8 dynamic per-token" } : {}),
    modules: [],
    excluded: ignore,
    transposed: [],
  };
}

/**
 * The quantized Linear paths of a compressed-tensors checkpoint: every
 * tensor name ending in `.weight_packed` (`pack-quantized`) or
 * `.weight_scale` (`int-quantized` keeps its int8 weight as `.weight`),
 * sorted.
 *
 * @example
 * ```ts
 * import { compressedTensorsModules } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const names = ["a.weight_packed", "a.weight_scale", "a.weight_shape", "b.weight", "c.weight", "c.weight_scale"];
 * assert.deepEqual(compressedTensorsModules(names), ["a", "c"]);
 * ```
 */
export function compressedTensorsModules(names: Iterable<string>): string[] {
  const all = [...names];
  return [
    ...new Set([
      ...pathsWithSuffix(all, ".weight_packed"),
      ...pathsWithSuffix(all, ".weight_scale"),
    ]),
  ].sort();
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
    scheme?: WeightScheme,
  ): TensorSpec[] {
    const scaleDtype = scaleDtypeFor(sourceDtype);
    if (scheme?.bits === 4) {
      const groups = inF / scheme.groupSize!;
      return [
        { name: `${path}.weight_packed`, dtype: "i32", shape: [out, inF / 8] },
        {
          name: `${path}.weight_scale`,
          dtype: scaleDtype,
          shape: [out, groups],
        },
        ...(scheme.symmetric ? [] : [{
          name: `${path}.weight_zero_point`,
          dtype: "i32" as const,
          shape: [Math.ceil(out / 8), groups],
        }]),
        { name: `${path}.weight_shape`, dtype: "i64", shape: [2] },
      ];
    }
    if (scheme?.method === "w8a8") {
      return [
        { name: `${path}.weight`, dtype: "i8", shape: [out, inF] },
        { name: `${path}.weight_scale`, dtype: scaleDtype, shape: [out, 1] },
      ];
    }
    return [
      {
        name: `${path}.weight_packed`,
        dtype: "i32",
        shape: [out, Math.ceil(inF / 4)],
      },
      {
        name: `${path}.weight_scale`,
        dtype: scaleDtype,
        shape: [out, 1],
      },
      { name: `${path}.weight_shape`, dtype: "i64", shape: [2] },
    ];
  },

  supports(scheme: WeightScheme): boolean {
    return scheme.bits === 4 ? scheme.groupSize !== null : scheme.symmetric;
  },

  encodeInt4Linear(r: Int4RowsRecord): Uint8Array[] {
    // Eight codes per little-endian word, element k in bits [4k, 4k + 4):
    // byte for byte TinyQ's own nibble order (2j low, 2j + 1 high).
    return [
      r.packed,
      scaleBytes(r.scales, scaleDtypeFor(r.sourceDtype)),
      ...(r.zeroPoints ? [zeroPointBytes(r)] : []),
      r.rowStart === 0
        ? shapeBytes(r.outFeatures, r.inFeatures)
        : new Uint8Array(0),
    ];
  },

  encodeLinear(r: QuantizedRowsRecord): Uint8Array[] {
    if (r.scheme?.method === "w8a8") {
      return [
        new Uint8Array(r.q.buffer, r.q.byteOffset, r.q.byteLength),
        scaleBytes(r.scales, scaleDtypeFor(r.sourceDtype)),
      ];
    }
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
      `${path}.weight`, // int-quantized (W8A8): int8 under the float name
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
    const plain = await read(`${path}.weight`);
    if (plain && !(await read(packedName))) {
      return intQuantized(path, plain, read);
    }
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

  async linearShape(path, read, tensors): Promise<[number, number]> {
    // int-quantized (W8A8) has no weight_shape: its int8 weight has the shape.
    const plain = tensors?.get(`${path}.weight`);
    if (
      plain && plain.shape.length === 2 &&
      !tensors?.has(`${path}.weight_shape`)
    ) {
      return [plain.shape[0]!, plain.shape[1]!];
    }
    const name = `${path}.weight_shape`;
    return shapeValues(await required(read, name, path), name);
  },

  async decodeInt4Linear(path, read): Promise<Int4Weight> {
    const packedName = `${path}.weight_packed`;
    const packed = await required(read, packedName, path);
    const shapeName = `${path}.weight_shape`;
    const [out, inF] = shapeValues(
      await required(read, shapeName, path),
      shapeName,
    );
    if (
      packed.dtype !== "i32" || packed.ndim !== 2 || packed.shape[0] !== out ||
      inF % 8 !== 0 || packed.shape[1] !== inF / 8
    ) {
      throw new TypeError(
        `"${packedName}" must be I32 [${out}, ${
          inF / 8
        }] for 4-bit [${out}, ${inF}] weights (eight values per word), got ${packed.dtype.toUpperCase()} [${
          packed.shape.join(", ")
        }]`,
      );
    }
    const scaleName = `${path}.weight_scale`;
    const scale = await required(read, scaleName, path);
    const groups = scale.ndim === 2 && scale.shape[0] === out
      ? scale.shape[1]!
      : 0;
    const groupSize = groups > 0 ? inF / groups : 0;
    if (![32, 64, 128].includes(groupSize) || !isFloatDType(scale.dtype)) {
      throw new TypeError(
        `"${scaleName}" must be a float [${out}, in / group] with groups of 32, 64 or 128 inputs, got ${scale.dtype.toUpperCase()} [${
          scale.shape.join(", ")
        }]`,
      );
    }
    if (await read(`${path}.weight_g_idx`)) {
      throw new TypeError(
        `"${path}.weight_g_idx" is present; TinyQ reads groups in input order (no actorder)`,
      );
    }
    const zpName = `${path}.weight_zero_point`;
    const zp = await read(zpName);
    if (
      zp && (zp.dtype !== "i32" || zp.ndim !== 2 ||
        zp.shape[0] !== Math.ceil(out / 8) || zp.shape[1] !== groups)
    ) {
      throw new TypeError(
        `"${zpName}" must be I32 [${
          Math.ceil(out / 8)
        }, ${groups}] (4-bit zero points, eight rows per word), got ${zp.dtype.toUpperCase()} [${
          zp.shape.join(", ")
        }]`,
      );
    }
    const words = packed.data as Int32Array;
    return {
      packed: new Uint8Array(words.buffer, words.byteOffset, words.byteLength),
      scales: Float32Array.from(scale.toF32Array()),
      zeroPoints: zp
        ? unpackZeroPoints(zp.data as Int32Array, out, groups)
        : null,
      n: out,
      k: inF,
      groupSize,
    };
  },

  keepFloat(layer: FormatLayer): string | null {
    return isLmHead(layer.path)
      ? "vLLM loads lm_head unquantized and has no parameter for lm_head.weight_packed"
      : null;
  },

  warnings(summary, layers): FormatWarning[] {
    return [
      ...vllmModuleWarnings(summary.modules, summary.excluded),
      // W8A8 runs on vLLM's int8 GEMM kernels, not Marlin.
      ...(summary.method === "w8a8" ? [] : marlinShapeWarnings(layers)),
    ];
  },
};

// The zero points of the 4-bit layers being written, by path.
// compressed-tensors packs them along the output dimension (eight rows per
// word, `pack_to_int32(zero_point, 4, packed_dim=0)`), so a word is whole
// only when its rows are: they are gathered (one byte per group, small) and
// written with the last block of rows.
const pendingZeroPoints = new Map<string, Uint8Array>();

function zeroPointBytes(r: Int4RowsRecord): Uint8Array {
  const groups = r.inFeatures / r.groupSize;
  let all = pendingZeroPoints.get(r.path);
  if (r.rowStart === 0 || !all) {
    all = new Uint8Array(r.outFeatures * groups);
    pendingZeroPoints.set(r.path, all);
  }
  all.set(r.zeroPoints!, r.rowStart * groups);
  if (r.rowStart + r.rows < r.outFeatures) return new Uint8Array(0);
  pendingZeroPoints.delete(r.path);
  const words = packZeroPoints(all, r.outFeatures, groups);
  return new Uint8Array(words.buffer);
}

/**
 * 4-bit zero points [out, groups] (0–15, TinyQ's offset codes, which are
 * compressed-tensors' signed zero points plus 8) packed along the output
 * dimension: element [r, g] in bits [4(r mod 8), 4(r mod 8) + 4) of word
 * [⌊r / 8⌋, g], the last word of a column padded with zeros.
 *
 * @example
 * ```ts
 * import { packZeroPoints, unpackZeroPoints } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const zp = Uint8Array.from({ length: 9 * 2 }, (_, i) => i % 16);
 * const words = packZeroPoints(zp, 9, 2);
 * assert.deepEqual(words.length, 4); // [ceil(9 / 8), 2]
 * assert.equal(words[0]! & 0xf, zp[0]); // row 0, group 0
 * assert.equal((words[0]! >>> 4) & 0xf, zp[2]); // row 1, group 0
 * assert.deepEqual(unpackZeroPoints(words, 9, 2), zp);
 * ```
 */
export function packZeroPoints(
  zp: Uint8Array,
  rows: number,
  groups: number,
): Int32Array {
  checkRows(zp.length, rows, groups, "zero points");
  const words = new Int32Array(Math.ceil(rows / 8) * groups);
  for (let r = 0; r < rows; r++) {
    const shift = 4 * (r & 7);
    const w = (r >> 3) * groups;
    for (let g = 0; g < groups; g++) {
      words[w + g]! |= (zp[r * groups + g]! & 0xf) << shift;
    }
  }
  return words;
}

/** The inverse of {@linkcode packZeroPoints}: zero points [rows, groups]. */
export function unpackZeroPoints(
  words: Int32Array,
  rows: number,
  groups: number,
): Uint8Array {
  checkRows(words.length, Math.ceil(rows / 8), groups, "zero point words");
  const zp = new Uint8Array(rows * groups);
  for (let r = 0; r < rows; r++) {
    const shift = 4 * (r & 7);
    const w = (r >> 3) * groups;
    for (let g = 0; g < groups; g++) {
      zp[r * groups + g] = (words[w + g]! >>> shift) & 0xf;
    }
  }
  return zp;
}

/** An `int-quantized` (W8A8) layer: `P.weight` I8 [out, in] and `P.weight_scale` [out, 1]. */
async function intQuantized(
  path: string,
  weight: Tensor,
  read: (name: string) => Promise<Tensor | null>,
): Promise<DecodedLinear> {
  if (weight.dtype !== "i8" || weight.ndim !== 2) {
    throw new TypeError(
      `"${path}.weight" must be I8 [out, in] in an int-quantized checkpoint, got ${weight.dtype.toUpperCase()} [${
        weight.shape.join(", ")
      }]`,
    );
  }
  const [out, inF] = weight.shape as [number, number];
  if (await read(`${path}.weight_zero_point`)) {
    throw new TypeError(
      `"${path}.weight_zero_point" is present; TinyQ reads W8A8 with symmetric weights`,
    );
  }
  const scaleName = `${path}.weight_scale`;
  return {
    q: weight.data as Int8Array,
    scales: perRowScales(await required(read, scaleName, path), out, scaleName),
    zeroPoints: null,
    outFeatures: out,
    inFeatures: inF,
  };
}

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
