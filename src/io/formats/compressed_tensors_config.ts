/**
 * compressed-tensors' `quantization_config` block of `config.json`: the one
 * TinyQ writes ({@linkcode compressedTensorsConfig}), and recognising the
 * checkpoints TinyQ can read from theirs ({@linkcode detectCompressedTensors},
 * {@linkcode compressedTensorsModules}). Sources read: compressed-tensors
 * `quant_args.py`, `quant_config.py`, `model_compressor.py`.
 *
 * @module
 */

import type { QuantizationSummary } from "./format.ts";
import {
  checkInt8Symmetric,
  isLmHead,
  isRecord,
  pathsWithSuffix,
  summaryFromExportMetadata,
} from "./export.ts";
import { INT4_GROUP_SIZES } from "../../quant/int4.ts";

/**
 * The compressed-tensors release whose serialization the config block
 * reproduces: the ten `QuantizationArgs` fields with `observer: "minmax"`,
 * without the later `scale_dtype`/`zp_dtype` (older releases forbid unknown
 * fields). Informational: compressed-tensors drops `version` when it parses
 * the block and vLLM never reads it.
 */
export const COMPRESSED_TENSORS_VERSION = "0.10.2";

const FORMAT = "compressed-tensors";

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
 * the Linear modules left in float — `lm_head` always, also when it is tied
 * to the embedding and has no tensor of its own. W8A16/W8A32: `pack-quantized` int8
 * symmetric static per-channel weights, no activation quantization; W4A16:
 * `pack-quantized` 4-bit weights, strategy `group` with the group size,
 * symmetric or not; W8A8: `int-quantized` int8 symmetric per-channel weights
 * and dynamic symmetric per-token int8 input activations. Keys are sorted as
 * transformers writes them.
 *
 * @example
 * ```ts
 * import { compressedTensorsConfig } from "./compressed_tensors_config.ts";
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
    // lm_head always: with tied embeddings there is no lm_head tensor to
    // list, and compressed-tensors' loaders then look for lm_head.weight_packed.
    ignore: summary.excluded.some(isLmHead)
      ? [...summary.excluded]
      : [...summary.excluded, "lm_head"],
    kv_cache_scheme: null,
    quant_method: "compressed-tensors",
    quantization_status: "compressed",
    version: COMPRESSED_TENSORS_VERSION,
  };
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
    if (
      strategy !== "group" ||
      !(INT4_GROUP_SIZES as readonly number[]).includes(size as number)
    ) {
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
 * import { compressedTensorsConfig, detectCompressedTensors } from "./compressed_tensors_config.ts";
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
 * import { compressedTensorsModules } from "./compressed_tensors_config.ts";
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
