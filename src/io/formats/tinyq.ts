/**
 * TinyQ's native layout (DESIGN.md): a quantized Linear at `P` is
 * `P.int8_weights` (I8 [out, in]) plus `P.scales` (F32 [out]) and, when
 * asymmetric, `P.zero_points` (I8 [out]); W8A32, W8A16 and W8A8 store the
 * same tensors. A 4-bit group-wise Linear (W4A16) is `P.int4_weights` (U8
 * [out, in/2], element 2j in the low nibble, 2j + 1 in the high nibble,
 * codes q + 8 when symmetric, q when asymmetric), `P.scales` (F32
 * [out, in/group]) and, when asymmetric, `P.zero_points` (U8 [out, in/group]).
 * Its bias keeps its name and bytes. Every shard's `__metadata__` carries
 * `"quantization"`, a JSON string of the {@linkcode QuantizationSummary}
 * (method, bits, group_size, symmetric, activations, modules…);
 * `config.json` gains a `quantization_config` block with
 * `quant_method: "tinyq"`.
 *
 * @module
 */

import { memberName } from "../../member_name.ts";
import type { DType } from "../../dtype.ts";
import type { Tensor } from "../../tensor.ts";
import type { Int4Weight } from "../../backend/backend.ts";
import {
  type CheckpointFormat,
  type DecodedLinear,
  type Int4RowsRecord,
  INT8_SYMMETRIC,
  type QuantizationSummary,
  type QuantizedRowsRecord,
  type TensorSpec,
  type WeightScheme,
} from "./format.ts";
import denoJson from "../../../deno.json" with { type: "json" };

/** The library version written into quantized checkpoints. */
export const TINYQ_VERSION: string = denoJson.version;

function bytesOf(a: Int8Array | Uint8Array | Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function stringList(v: unknown, what: string): string[] {
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
    throw new TypeError(`${what} must be a list of strings`);
  }
  return v as string[];
}

/** Reads a summary from its JSON form (metadata or config block). */
function parseSummary(
  raw: Record<string, unknown>,
  where: string,
): QuantizationSummary {
  const str = (k: string): string => {
    const v = raw[k];
    if (typeof v !== "string") {
      throw new TypeError(`${where}: "${k}" must be a string`);
    }
    return v;
  };
  const modules = stringList(
    raw.modules ?? raw.quantized_modules,
    `${where}: "modules"`,
  );
  const summary: QuantizationSummary = {
    library: "tinyq",
    version: str("version"),
    method: str("method"),
    bits: typeof raw.bits === "number" ? raw.bits : 8,
    granularity: typeof raw.granularity === "string"
      ? raw.granularity
      : "per-channel",
    symmetric: raw.symmetric !== false,
    modules,
    excluded:
      raw.excluded === undefined && raw.modules_to_not_convert === undefined
        ? []
        : stringList(
          raw.excluded ?? raw.modules_to_not_convert,
          `${where}: "excluded"`,
        ),
    transposed: raw.transposed === undefined
      ? []
      : stringList(raw.transposed, `${where}: "transposed"`),
    ...(typeof raw.weight_dtype === "string"
      ? { weightDtype: raw.weight_dtype as DType }
      : {}),
    groupSize: typeof raw.group_size === "number" ? raw.group_size : null,
    ...(typeof raw.activations === "string"
      ? { activations: raw.activations }
      : {}),
  };
  if (summary.bits !== 8 && summary.bits !== 4) {
    throw new TypeError(`${where}: "bits" must be 8 or 4, got ${summary.bits}`);
  }
  if (
    summary.bits === 4 &&
    !(Number.isSafeInteger(summary.groupSize) && summary.groupSize! > 0)
  ) {
    throw new TypeError(
      `${where}: 4-bit weights need a positive integer "group_size"`,
    );
  }
  return summary;
}

/** The fields every summary serialization shares, in a fixed order. */
function schemeFields(s: QuantizationSummary): Record<string, unknown> {
  return {
    method: s.method,
    bits: s.bits,
    group_size: s.groupSize ?? null,
    granularity: s.granularity,
    symmetric: s.symmetric,
    ...(s.activations ? { activations: s.activations } : {}),
  };
}

function checkTensor(
  t: Tensor,
  name: string,
  dtype: string,
  shape: readonly number[],
): void {
  if (
    t.dtype !== dtype || t.ndim !== shape.length ||
    t.shape.some((d, i) => d !== shape[i])
  ) {
    throw new TypeError(
      `"${name}" must be ${dtype.toUpperCase()} [${
        shape.join(", ")
      }], got ${t.dtype.toUpperCase()} [${t.shape.join(", ")}]`,
    );
  }
}

/**
 * TinyQ's own checkpoint format.
 *
 * @example The tensors of one quantized Linear
 * ```ts
 * import { tinyqFormat } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const specs = tinyqFormat.linearTensors("mlp.up_proj", 8, 4, "bf16");
 * assert.deepEqual(specs.map((s) => [s.name, s.dtype, s.shape]), [
 *   ["mlp.up_proj.int8_weights", "i8", [8, 4]],
 *   ["mlp.up_proj.scales", "f32", [8]],
 * ]);
 * const w4 = { bits: 4, groupSize: 32, symmetric: false } as const;
 * const int4 = tinyqFormat.linearTensors("mlp.up_proj", 8, 64, "bf16", w4);
 * assert.deepEqual(int4.map((s) => [s.name, s.dtype, s.shape]), [
 *   ["mlp.up_proj.int4_weights", "u8", [8, 32]],
 *   ["mlp.up_proj.scales", "f32", [8, 2]],
 *   ["mlp.up_proj.zero_points", "u8", [8, 2]],
 * ]);
 * ```
 */
export const tinyqFormat: CheckpointFormat = {
  name: "tinyq",

  linearTensors(
    path: string,
    out: number,
    inF: number,
    _sourceDtype?: DType,
    scheme: WeightScheme = INT8_SYMMETRIC,
  ): TensorSpec[] {
    if (scheme.bits === 4) {
      const groups = [out, inF / scheme.groupSize!];
      return [
        {
          name: memberName(path, "int4_weights"),
          dtype: "u8",
          shape: [out, inF / 2],
        },
        { name: memberName(path, "scales"), dtype: "f32", shape: groups },
        ...(scheme.symmetric ? [] : [{
          name: memberName(path, "zero_points"),
          dtype: "u8" as const,
          shape: groups,
        }]),
      ];
    }
    return [
      {
        name: memberName(path, "int8_weights"),
        dtype: "i8",
        shape: [out, inF],
      },
      { name: memberName(path, "scales"), dtype: "f32", shape: [out] },
      ...(scheme.symmetric ? [] : [{
        name: memberName(path, "zero_points"),
        dtype: "i8" as const,
        shape: [out],
      }]),
    ];
  },

  encodeLinear(r: QuantizedRowsRecord): Uint8Array[] {
    return r.zeroPoints
      ? [bytesOf(r.q), bytesOf(r.scales), bytesOf(r.zeroPoints)]
      : [bytesOf(r.q), bytesOf(r.scales)];
  },

  encodeInt4Linear(r: Int4RowsRecord): Uint8Array[] {
    return r.zeroPoints
      ? [r.packed, bytesOf(r.scales), r.zeroPoints]
      : [r.packed, bytesOf(r.scales)];
  },

  supports(scheme: WeightScheme): boolean {
    return scheme.bits === 8 ||
      (scheme.bits === 4 && scheme.groupSize !== null);
  },

  fileMetadata(s: QuantizationSummary): Record<string, string> {
    return {
      quantization: JSON.stringify({
        library: s.library,
        version: s.version,
        ...schemeFields(s),
        ...(s.weightDtype ? { weight_dtype: s.weightDtype } : {}),
        modules: s.modules,
        excluded: s.excluded,
        transposed: s.transposed,
      }),
    };
  },

  configBlock(s: QuantizationSummary): Record<string, unknown> {
    return {
      quant_method: "tinyq",
      version: s.version,
      ...schemeFields(s),
      ...(s.weightDtype ? { weight_dtype: s.weightDtype } : {}),
      quantized_modules: s.modules,
      modules_to_not_convert: s.excluded,
      transposed: s.transposed,
    };
  },

  extraFiles(): Record<string, string> {
    return {};
  },

  detect(metadata, config): QuantizationSummary | null {
    const text = metadata?.quantization;
    if (text !== undefined) {
      let raw: unknown;
      try {
        raw = JSON.parse(text);
      } catch {
        throw new TypeError(`__metadata__ "quantization" is not JSON`);
      }
      if (
        typeof raw === "object" && raw !== null &&
        (raw as Record<string, unknown>).library === "tinyq"
      ) {
        return parseSummary(
          raw as Record<string, unknown>,
          `__metadata__ "quantization"`,
        );
      }
    }
    const block = config?.quantization_config;
    if (
      typeof block === "object" && block !== null &&
      (block as Record<string, unknown>).quant_method === "tinyq"
    ) {
      return parseSummary(
        block as Record<string, unknown>,
        "config.json quantization_config",
      );
    }
    return null;
  },

  storedNames(path: string): string[] {
    return [
      memberName(path, "int8_weights"),
      memberName(path, "int4_weights"),
      memberName(path, "scales"),
      memberName(path, "zero_points"),
    ];
  },

  async decodeInt4Linear(
    path: string,
    read: (name: string) => Promise<Tensor | null>,
  ): Promise<Int4Weight> {
    const w = await read(memberName(path, "int4_weights"));
    const s = await read(memberName(path, "scales"));
    if (!w || !s) {
      throw new TypeError(
        `"${path}" is listed as quantized (4-bit) but has no ${
          w ? "scales" : "int4_weights"
        }`,
      );
    }
    if (w.dtype !== "u8" || w.ndim !== 2) {
      throw new TypeError(
        `"${path}.int4_weights" must be U8 [out, in / 2], got ${w.dtype.toUpperCase()} [${
          w.shape.join(", ")
        }]`,
      );
    }
    const [out, half] = w.shape as [number, number];
    const k = half * 2;
    const groups = s.ndim === 2 ? s.shape[1]! : 0;
    if (groups === 0 || k % groups !== 0) {
      throw new TypeError(
        `"${path}.scales" must be F32 [${out}, in / group] for ${k} inputs, got ${s.dtype.toUpperCase()} [${
          s.shape.join(", ")
        }]`,
      );
    }
    checkTensor(s, memberName(path, "scales"), "f32", [out, groups]);
    const zp = await read(memberName(path, "zero_points"));
    if (zp) {
      checkTensor(zp, memberName(path, "zero_points"), "u8", [out, groups]);
    }
    return {
      packed: w.data as Uint8Array,
      scales: s.data as Float32Array,
      zeroPoints: (zp?.data as Uint8Array | undefined) ?? null,
      n: out,
      k,
      groupSize: k / groups,
    };
  },

  async decodeLinear(
    path: string,
    read: (name: string) => Promise<Tensor | null>,
  ): Promise<DecodedLinear> {
    const q = await read(memberName(path, "int8_weights"));
    const s = await read(memberName(path, "scales"));
    if (!q || !s) {
      throw new TypeError(
        `"${path}" is listed as quantized but has no ${
          q ? "scales" : "int8_weights"
        }`,
      );
    }
    if (q.dtype !== "i8" || q.ndim !== 2) {
      throw new TypeError(
        `"${path}.int8_weights" must be I8 [out, in], got ${q.dtype.toUpperCase()} [${
          q.shape.join(", ")
        }]`,
      );
    }
    const [out, inF] = q.shape as [number, number];
    if (s.dtype !== "f32" || s.size !== out) {
      throw new TypeError(
        `"${path}.scales" must be F32 [${out}], got ${s.dtype.toUpperCase()} [${
          s.shape.join(", ")
        }]`,
      );
    }
    const zp = await read(memberName(path, "zero_points"));
    if (zp && (zp.dtype !== "i8" || zp.size !== out)) {
      throw new TypeError(`"${path}.zero_points" must be I8 [${out}]`);
    }
    return {
      q: q.data as Int8Array,
      scales: s.data as Float32Array,
      zeroPoints: (zp?.data as Int8Array | undefined) ?? null,
      outFeatures: out,
      inFeatures: inF,
    };
  },
};
