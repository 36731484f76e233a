/**
 * TinyQ's native layout (DESIGN.md): a quantized Linear at `P` is
 * `P.int8_weights` (I8 [out, in]) plus `P.scales` (F32 [out]); its bias keeps
 * its name and bytes. Every shard's `__metadata__` carries `"quantization"`, a
 * JSON string of the {@linkcode QuantizationSummary}; `config.json` gains a
 * `quantization_config` block with `quant_method: "tinyq"`.
 *
 * @module
 */

import type { DType } from "../../dtype.ts";
import type { Tensor } from "../../tensor.ts";
import type {
  CheckpointFormat,
  DecodedLinear,
  QuantizationSummary,
  QuantizedRowsRecord,
  TensorSpec,
} from "./format.ts";
import denoJson from "../../../deno.json" with { type: "json" };

/** The library version written into quantized checkpoints. */
export const TINYQ_VERSION: string = denoJson.version;

function bytesOf(a: Int8Array | Float32Array): Uint8Array {
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
  };
  return summary;
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
 * ```
 */
export const tinyqFormat: CheckpointFormat = {
  name: "tinyq",

  linearTensors(path: string, out: number, inF: number): TensorSpec[] {
    return [
      { name: `${path}.int8_weights`, dtype: "i8", shape: [out, inF] },
      { name: `${path}.scales`, dtype: "f32", shape: [out] },
    ];
  },

  encodeLinear(r: QuantizedRowsRecord): Uint8Array[] {
    return [bytesOf(r.q), bytesOf(r.scales)];
  },

  fileMetadata(s: QuantizationSummary): Record<string, string> {
    return {
      quantization: JSON.stringify({
        library: s.library,
        version: s.version,
        method: s.method,
        bits: s.bits,
        granularity: s.granularity,
        symmetric: s.symmetric,
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
      method: s.method,
      bits: s.bits,
      granularity: s.granularity,
      symmetric: s.symmetric,
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
    return [`${path}.int8_weights`, `${path}.scales`, `${path}.zero_points`];
  },

  async decodeLinear(
    path: string,
    read: (name: string) => Promise<Tensor | null>,
  ): Promise<DecodedLinear> {
    const q = await read(`${path}.int8_weights`);
    const s = await read(`${path}.scales`);
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
    const zp = await read(`${path}.zero_points`);
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
