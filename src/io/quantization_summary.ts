/**
 * The {@linkcode QuantizationSummary} a checkpoint writer records, and the
 * check that the output format can store the scheme at all.
 *
 * @module
 */

import type {
  CheckpointFormat,
  QuantizationSummary,
  WeightScheme,
} from "./formats/format.ts";
import { TINYQ_VERSION } from "./formats/tinyq.ts";
import type { LayerInfo } from "./_checkpoint_layers.ts";
import { METHODS, type QuantMethod } from "../quant/schemes.ts";

/**
 * What TinyQ records for `quantized` layers stored as `scheme`; `linears`
 * (the source's Linear layers by path) gives their dtypes and orientation.
 */
export function quantizationSummary(
  method: QuantMethod,
  scheme: WeightScheme,
  linears: ReadonlyMap<string, Pick<LayerInfo, "dtype" | "transposed">>,
  quantized: readonly string[],
  excluded: readonly string[],
): QuantizationSummary {
  const dtypes = new Set(quantized.map((p) => linears.get(p)?.dtype));
  const only = dtypes.size === 1 ? [...dtypes][0] : undefined;
  return {
    library: "tinyq",
    version: TINYQ_VERSION,
    method,
    bits: scheme.bits,
    granularity: scheme.bits === 4 ? "group" : "per-channel",
    symmetric: scheme.symmetric,
    groupSize: scheme.groupSize,
    activations: METHODS[method].activations,
    modules: [...quantized],
    excluded: [...excluded],
    transposed: quantized.filter((p) => linears.get(p)?.transposed),
    ...(only ? { weightDtype: only } : {}),
  };
}

/** Refuses a scheme the output format cannot store, before any work. */
export function checkFormatScheme(
  format: CheckpointFormat,
  method: QuantMethod,
  scheme: WeightScheme,
): void {
  const ok = format.supports
    ? format.supports(scheme)
    : scheme.bits === 8 && scheme.symmetric;
  if (!ok || (scheme.bits === 4 && !format.encodeInt4Linear)) {
    throw new RangeError(
      `the ${format.name} format does not store ${method} ${
        scheme.bits === 4 ? `4-bit (group ${scheme.groupSize})` : "8-bit"
      } ${scheme.symmetric ? "symmetric" : "asymmetric"} weights`,
    );
  }
}
