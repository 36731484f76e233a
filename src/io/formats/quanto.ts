/**
 * The optimum-quanto layout for qint8 weights, as
 * `QuantizedModelForCausalLM.save_pretrained` writes it and `requantize`
 * reads it back.
 *
 * A quantized Linear at `P` is stored as
 * - `P.weight._data`: I8 [out, in], the int8 values;
 * - `P.weight._scale`: [out, 1] in the float dtype of the original weight,
 *   our f32 scale rounded to nearest even (a weight is `_data · _scale`);
 * - `P.input_scale` and `P.output_scale`: 0-d tensors holding 1 in that dtype,
 *   the activation scales a `QModuleMixin` registers as `torch.ones(())` and
 *   saves with every module (they are only used when activations are
 *   quantized, which they are not here);
 * - `P.bias` and every other tensor unchanged.
 *
 * Beside the shards goes `quanto_qmap.json` ({@linkcode quantoQmap}).
 * `config.json` gets no `quantization_config`: quanto writes none, and
 * transformers would route a `quant_method: "quanto"` block to its own
 * quantizer, which cannot load saved quanto weights.
 *
 * quanto's int8 scale is absmax / 127 with range [-128, 127] (its
 * `AbsmaxOptimizer` with `qint8.qmax`), the same rule as TinyQ's, so the
 * values are the ones quanto computes from the same f32 weights. For bf16 or
 * f16 weights the stored scales are quanto's too, but quanto divides in that
 * dtype, so a few int8 values differ from its own by one (TinyQ's are the
 * exact f32 quotients).
 *
 * What quanto's loaders need beyond the tensors: GPT-2's Conv1D layers stay in
 * float (quanto quantizes only `torch.nn.Linear`, so `requantize` could not
 * rebuild them), and a quantized `lm_head` sets `tie_word_embeddings: false`
 * in `config.json`, as `save_pretrained` does (`from_pretrained` would tie it
 * to the input embedding otherwise). Sources read: optimum-quanto
 * `nn/qmodule.py`, `nn/qlinear.py`, `tensor/weights/qbytes.py`, `quantize.py`,
 * `models/transformers_models.py`.
 *
 * @module
 */

import { memberName } from "../../member_name.ts";
import type { DType } from "../../dtype.ts";
import type { Tensor } from "../../tensor.ts";
import type {
  CheckpointFormat,
  DecodedLinear,
  DetectContext,
  FormatLayer,
  QuantizationSummary,
  QuantizedRowsRecord,
  TensorSpec,
} from "./format.ts";
import {
  checkInt8Symmetric,
  exportMetadata,
  int8Matrix,
  isLmHead,
  isRecord,
  oneBytes,
  pathsWithSuffix,
  perRowScales,
  required,
  scaleBytes,
  scaleDtypeFor,
  summaryFromExportMetadata,
  weightDtypeFromScales,
} from "./export.ts";

const FORMAT = "quanto";

/** The name of the quantization map quanto writes beside the shards. */
export const QUANTO_QMAP_NAME = "quanto_qmap.json";

/** One module's entry in `quanto_qmap.json`. */
export interface QuantoQmapEntry {
  /** Weight qtype name (`"qint8"`), or `"none"`. */
  readonly weights: string;
  /** Activation qtype name, or `"none"`. */
  readonly activations: string;
}

/**
 * The quantization map of an export: each quantized module mapped to
 * `{"weights": "qint8", "activations": "none"}`.
 *
 * Modules left in float are not listed, as quanto's own `quantization_map`
 * lists only the modules it swapped for a `QLinear`: an entry with
 * `"weights": "none"` would make `requantize` build a `QLinear` without a
 * weight qtype, whose `forward` passes `None` as the weight.
 *
 * @example
 * ```ts
 * import { quantoQmap } from "./quanto.ts";
 * import assert from "node:assert/strict";
 * const qmap = quantoQmap({
 *   library: "tinyq", version: "0.1.0", method: "w8a16", bits: 8,
 *   granularity: "per-channel", symmetric: true,
 *   modules: ["model.layers.0.mlp.up_proj"], excluded: ["lm_head"], transposed: [],
 * });
 * assert.deepEqual(qmap, {
 *   "model.layers.0.mlp.up_proj": { weights: "qint8", activations: "none" },
 * });
 * ```
 */
export function quantoQmap(
  summary: QuantizationSummary,
): Record<string, QuantoQmapEntry> {
  checkInt8Symmetric(FORMAT, summary);
  const qmap: Record<string, QuantoQmapEntry> = {};
  for (const m of summary.modules) {
    qmap[m] = { weights: "qint8", activations: "none" };
  }
  return qmap;
}

/**
 * Reads a `quanto_qmap.json` and returns the paths of its qint8 modules,
 * sorted. Throws, naming the module, for what TinyQ cannot represent: other
 * weight qtypes (qint4, qfloat8, …) and quantized activations.
 *
 * @example
 * ```ts
 * import { quantoModules } from "./quanto.ts";
 * import assert from "node:assert/strict";
 * const text = '{"fc": {"weights": "qint8", "activations": "none"}}';
 * assert.deepEqual(quantoModules(text), ["fc"]);
 * ```
 */
export function quantoModules(qmapJson: string): string[] {
  let raw: unknown;
  try {
    raw = JSON.parse(qmapJson);
  } catch {
    throw new TypeError(`${QUANTO_QMAP_NAME} is not JSON`);
  }
  if (!isRecord(raw)) {
    throw new TypeError(`${QUANTO_QMAP_NAME} is not a JSON object`);
  }
  const modules: string[] = [];
  for (const [name, entry] of Object.entries(raw)) {
    if (!isRecord(entry)) {
      throw new TypeError(`${QUANTO_QMAP_NAME}: "${name}" is not an object`);
    }
    const { weights, activations } = entry;
    if (activations !== undefined && activations !== "none") {
      throw new TypeError(
        `${QUANTO_QMAP_NAME}: "${name}" quantizes activations (${activations}); TinyQ reads qint8 weight-only modules`,
      );
    }
    if (weights === "none") continue;
    if (weights !== "qint8") {
      throw new TypeError(
        `${QUANTO_QMAP_NAME}: "${name}" has ${weights} weights; TinyQ reads qint8`,
      );
    }
    modules.push(name);
  }
  return modules.sort();
}

/**
 * Recognises a quanto checkpoint. An export of TinyQ carries its summary in
 * `__metadata__`; one quanto wrote has only `quanto_qmap.json`, whose text
 * `qmapJson` gives the modules (the summary's `library` is then
 * `"optimum-quanto"`). Returns null when neither says quanto.
 *
 * @example
 * ```ts
 * import { detectQuanto } from "./quanto.ts";
 * import assert from "node:assert/strict";
 * const text = '{"fc": {"weights": "qint8", "activations": "none"}}';
 * assert.deepEqual(detectQuanto(null, text)?.modules, ["fc"]);
 * assert.equal(detectQuanto(null, null), null);
 * ```
 */
export function detectQuanto(
  metadata: Readonly<Record<string, string>> | null,
  qmapJson: string | null,
): QuantizationSummary | null {
  const own = summaryFromExportMetadata(FORMAT, metadata);
  if (own || qmapJson === null) return own;
  return {
    library: "optimum-quanto",
    version: "unknown",
    method: "w8a16",
    bits: 8,
    granularity: "per-channel",
    symmetric: true,
    modules: quantoModules(qmapJson),
    excluded: [],
    transposed: [],
  };
}

/**
 * The paths that hold quanto qint8 weights: every tensor name ending in
 * `.weight._data`, sorted.
 *
 * @example
 * ```ts
 * import { quantoWeightPaths } from "./quanto.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(quantoWeightPaths(["fc.weight._data", "fc.weight._scale", "fc.bias"]), ["fc"]);
 * ```
 */
export function quantoWeightPaths(names: Iterable<string>): string[] {
  return pathsWithSuffix(names, ".weight._data");
}

/**
 * The optimum-quanto qint8 output format.
 *
 * @example The tensors of one quantized Linear
 * ```ts
 * import { quantoFormat } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const specs = quantoFormat.linearTensors("fc", 2, 3, "f16");
 * assert.deepEqual(specs.map((s) => [s.name, s.dtype, s.shape]), [
 *   ["fc.weight._data", "i8", [2, 3]],
 *   ["fc.weight._scale", "f16", [2, 1]],
 *   ["fc.input_scale", "f16", []],
 *   ["fc.output_scale", "f16", []],
 * ]);
 * ```
 */
export const quantoFormat: CheckpointFormat = {
  name: FORMAT,

  linearTensors(
    path: string,
    out: number,
    inF: number,
    sourceDtype: DType,
  ): TensorSpec[] {
    const dtype = scaleDtypeFor(sourceDtype);
    return [
      {
        name: memberName(path, "weight._data"),
        dtype: "i8",
        shape: [out, inF],
      },
      { name: memberName(path, "weight._scale"), dtype, shape: [out, 1] },
      { name: memberName(path, "input_scale"), dtype, shape: [] },
      { name: memberName(path, "output_scale"), dtype, shape: [] },
    ];
  },

  encodeLinear(r: QuantizedRowsRecord): Uint8Array[] {
    const dtype = scaleDtypeFor(r.sourceDtype);
    // The 0-d activation scales are whole tensors: they go with the first block.
    const scalar = r.rowStart === 0 ? oneBytes(dtype) : new Uint8Array(0);
    return [
      new Uint8Array(r.q.buffer, r.q.byteOffset, r.q.byteLength),
      scaleBytes(r.scales, dtype),
      scalar,
      scalar,
    ];
  },

  fileMetadata(summary: QuantizationSummary): Record<string, string> {
    return exportMetadata(FORMAT, summary);
  },

  /** Empty: a quanto checkpoint's `config.json` has no `quantization_config`. */
  configBlock(): Record<string, unknown> {
    return {};
  },

  extraFiles(summary: QuantizationSummary): Record<string, string> {
    // quanto writes the map with json.dump(indent=4), which this reproduces.
    return { [QUANTO_QMAP_NAME]: JSON.stringify(quantoQmap(summary), null, 4) };
  },

  detectFiles: [QUANTO_QMAP_NAME],

  detect(metadata, _config, context): QuantizationSummary | null {
    const summary = detectQuanto(
      metadata,
      context?.files[QUANTO_QMAP_NAME] ?? null,
    );
    if (!summary || !context || summary.library === "tinyq") return summary;
    return withTensors(summary, context);
  },

  storedNames(path: string): string[] {
    return [
      memberName(path, "weight._data"),
      memberName(path, "weight._scale"),
      memberName(path, "input_scale"),
      memberName(path, "output_scale"),
    ];
  },

  async decodeLinear(
    path: string,
    read: (name: string) => Promise<Tensor | null>,
  ): Promise<DecodedLinear> {
    const dataName = memberName(path, "weight._data");
    const data = await required(read, dataName, path);
    const [out, inF] = int8Matrix(data, dataName, " (qint8)");
    const scaleName = memberName(path, "weight._scale");
    const scales = perRowScales(
      await required(read, scaleName, path),
      out,
      scaleName,
    );
    return {
      q: data.data as Int8Array,
      scales,
      zeroPoints: null,
      outFeatures: out,
      inFeatures: inF,
    };
  },

  keepFloat(layer: FormatLayer): string | null {
    return layer.transposed
      ? "GPT-2 Conv1D layer: optimum-quanto quantizes only torch.nn.Linear, so requantize could not load it quantized"
      : null;
  },

  updateConfig(config, summary): Record<string, unknown> {
    // quanto's save_pretrained unties a quantized output embedding, and its
    // from_pretrained ties lm_head to the input embedding unless told not to.
    if (
      config.tie_word_embeddings === false ||
      !summary.modules.some(isLmHead)
    ) {
      return { ...config };
    }
    return { ...config, tie_word_embeddings: false };
  },
};

/**
 * A checkpoint quanto wrote: every module of its map must hold
 * `weight._data`, and its weights' dtype is that of the stored scales.
 */
function withTensors(
  summary: QuantizationSummary,
  context: DetectContext,
): QuantizationSummary {
  for (const m of summary.modules) {
    if (!context.tensors.has(memberName(m, "weight._data"))) {
      throw new TypeError(
        `${QUANTO_QMAP_NAME} maps "${m}" to qint8, but the checkpoint has no "${m}.weight._data"`,
      );
    }
  }
  return {
    ...summary,
    ...weightDtypeFromScales(
      summary.modules,
      context.tensors,
      ".weight._scale",
    ),
  };
}
