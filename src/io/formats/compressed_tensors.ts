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
 * (`compressedTensorsConfig`) whose `ignore` lists every Linear left
 * in float. `lm_head` always stays in float (vLLM loads it unquantized and
 * has no parameter for `lm_head.weight_packed`), and the layers vLLM may
 * refuse are warned about (`marlinShapeWarnings`,
 * `vllmModuleWarnings`). GPT-2's Conv1D weights are stored in Linear
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

import { memberName } from "../../member_name.ts";
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
import type { Int4Weight } from "../../backend/backend.ts";
import {
  describeTensor,
  exportMetadata,
  int8Matrix,
  isLmHead,
  perRowScales,
  required,
  scaleBytes,
  scaleDtypeFor,
  weightDtypeFromScales,
} from "./export.ts";
import {
  compressedTensorsConfig,
  compressedTensorsModules,
  detectCompressedTensors,
} from "./compressed_tensors_config.ts";
import {
  packInt8Rows,
  packZeroPoints,
  unpackInt8Rows,
  unpackZeroPoints,
} from "./compressed_tensors_packing.ts";
import {
  marlinShapeWarnings,
  vllmModuleWarnings,
} from "./compressed_tensors_warnings.ts";
import { INT4_GROUP_SIZES } from "../../quant/int4.ts";

const FORMAT = "compressed-tensors";

function shapeBytes(out: number, inF: number): Uint8Array {
  return new Uint8Array(new BigInt64Array([BigInt(out), BigInt(inF)]).buffer);
}

function shapeValues(t: Tensor, name: string): [number, number] {
  if ((t.dtype !== "i64" && t.dtype !== "i32") || t.size !== 2) {
    throw new TypeError(
      `"${name}" must be I64 [2] = [out, in], got ${describeTensor(t)}`,
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
        {
          name: memberName(path, "weight_packed"),
          dtype: "i32",
          shape: [out, inF / 8],
        },
        {
          name: memberName(path, "weight_scale"),
          dtype: scaleDtype,
          shape: [out, groups],
        },
        ...(scheme.symmetric ? [] : [{
          name: memberName(path, "weight_zero_point"),
          dtype: "i32" as const,
          shape: [Math.ceil(out / 8), groups],
        }]),
        { name: memberName(path, "weight_shape"), dtype: "i64", shape: [2] },
      ];
    }
    if (scheme?.method === "w8a8") {
      return [
        { name: memberName(path, "weight"), dtype: "i8", shape: [out, inF] },
        {
          name: memberName(path, "weight_scale"),
          dtype: scaleDtype,
          shape: [out, 1],
        },
      ];
    }
    return [
      {
        name: memberName(path, "weight_packed"),
        dtype: "i32",
        shape: [out, Math.ceil(inF / 4)],
      },
      {
        name: memberName(path, "weight_scale"),
        dtype: scaleDtype,
        shape: [out, 1],
      },
      { name: memberName(path, "weight_shape"), dtype: "i64", shape: [2] },
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
      memberName(path, "weight_packed"),
      memberName(path, "weight"), // int-quantized (W8A8): int8 under the float name
      memberName(path, "weight_scale"),
      memberName(path, "weight_shape"),
      memberName(path, "weight_zero_point"),
      memberName(path, "weight_g_idx"),
    ];
  },

  async decodeLinear(
    path: string,
    read: (name: string) => Promise<Tensor | null>,
  ): Promise<DecodedLinear> {
    const packedName = memberName(path, "weight_packed");
    const plain = await read(memberName(path, "weight"));
    if (plain && !(await read(packedName))) {
      return intQuantized(path, plain, read);
    }
    const packed = await required(read, packedName, path);
    const shapeName = memberName(path, "weight_shape");
    const [out, inF] = shapeValues(
      await required(read, shapeName, path),
      shapeName,
    );
    if (packed.dtype !== "i32" || packed.ndim !== 2) {
      throw new TypeError(
        `"${packedName}" must be I32 [out, ceil(in / 4)], got ${
          describeTensor(packed)
        }`,
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
      if (await read(memberName(path, extra))) {
        throw new TypeError(
          `"${path}.${extra}" is present; TinyQ reads symmetric per-channel weights without ${extra}`,
        );
      }
    }
    const scaleName = memberName(path, "weight_scale");
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
    const plain = tensors?.get(memberName(path, "weight"));
    if (
      plain && plain.shape.length === 2 &&
      !tensors?.has(memberName(path, "weight_shape"))
    ) {
      return [plain.shape[0]!, plain.shape[1]!];
    }
    const name = memberName(path, "weight_shape");
    return shapeValues(await required(read, name, path), name);
  },

  async decodeInt4Linear(path, read): Promise<Int4Weight> {
    const packedName = memberName(path, "weight_packed");
    const packed = await required(read, packedName, path);
    const shapeName = memberName(path, "weight_shape");
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
        }] for 4-bit [${out}, ${inF}] weights (eight values per word), got ${
          describeTensor(packed)
        }`,
      );
    }
    const scaleName = memberName(path, "weight_scale");
    const scale = await required(read, scaleName, path);
    const groups = scale.ndim === 2 && scale.shape[0] === out
      ? scale.shape[1]!
      : 0;
    const groupSize = groups > 0 ? inF / groups : 0;
    if (
      !(INT4_GROUP_SIZES as readonly number[]).includes(groupSize) ||
      !isFloatDType(scale.dtype)
    ) {
      throw new TypeError(
        `"${scaleName}" must be a float [${out}, in / group] with groups of 32, 64 or 128 inputs, got ${
          describeTensor(scale)
        }`,
      );
    }
    if (await read(memberName(path, "weight_g_idx"))) {
      throw new TypeError(
        `"${path}.weight_g_idx" is present; TinyQ reads groups in input order (no actorder)`,
      );
    }
    const zpName = memberName(path, "weight_zero_point");
    const zp = await read(zpName);
    if (
      zp && (zp.dtype !== "i32" || zp.ndim !== 2 ||
        zp.shape[0] !== Math.ceil(out / 8) || zp.shape[1] !== groups)
    ) {
      throw new TypeError(
        `"${zpName}" must be I32 [${
          Math.ceil(out / 8)
        }, ${groups}] (4-bit zero points, eight rows per word), got ${
          describeTensor(zp)
        }`,
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

/** An `int-quantized` (W8A8) layer: `P.weight` I8 [out, in] and `P.weight_scale` [out, 1]. */
async function intQuantized(
  path: string,
  weight: Tensor,
  read: (name: string) => Promise<Tensor | null>,
): Promise<DecodedLinear> {
  const [out, inF] = int8Matrix(
    weight,
    memberName(path, "weight"),
    " in an int-quantized checkpoint",
  );
  if (await read(memberName(path, "weight_zero_point"))) {
    throw new TypeError(
      `"${path}.weight_zero_point" is present; TinyQ reads W8A8 with symmetric weights`,
    );
  }
  const scaleName = memberName(path, "weight_scale");
  return {
    q: weight.data as Int8Array,
    scales: perRowScales(await required(read, scaleName, path), out, scaleName),
    zeroPoints: null,
    outFeatures: out,
    inFeatures: inF,
  };
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
  return {
    ...summary,
    modules,
    ...weightDtypeFromScales(modules, context.tensors, ".weight_scale"),
  };
}
