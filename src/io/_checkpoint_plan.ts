/**
 * What quantizing a checkpoint would do to each of its tensors (`tinyq
 * inspect` shows it; {@linkcode Checkpoint.plan} is the way in).
 *
 * @module
 */

import { excludeMatcher } from "../quant/replace.ts";
import type { CheckpointEntry } from "./checkpoint_entry.ts";
import type { QuantizationSummary } from "./formats/format.ts";
import type { LayerInfo } from "./_checkpoint_layers.ts";

/** What a checkpoint tensor becomes when quantized, for `inspect`. */
export interface TensorPlan {
  /** Full tensor name. */
  readonly name: string;
  /** `quantize` (a Linear weight), `exclude` (one left by `exclude`), `keep`, or `quantized` (already int8). */
  readonly action: "quantize" | "exclude" | "keep" | "quantized";
  /** Why. */
  readonly reason: string;
}

/**
 * The plan for every tensor of `entries`, given the checkpoint's layers, the
 * quantization it records (or null) and `exclude` (child names or
 * dotted-path globs, as for `replaceLinearWithTargetAndQuantize`).
 */
export function planTensors(
  entries: readonly CheckpointEntry[],
  split: (name: string) => [path: string, local: string],
  layers: readonly LayerInfo[],
  quantization: QuantizationSummary | null,
  exclude: readonly string[],
): TensorPlan[] {
  const excluded = excludeMatcher(exclude);
  const byPath = new Map(layers.map((l) => [l.path, l]));
  const q = quantization;
  const leftFloat = new Set(q?.excluded ?? []);
  return entries.map((e): TensorPlan => {
    const [path, local] = split(e.name);
    const layer = byPath.get(path)!;
    if (layer.quantized) {
      return { name: e.name, action: "quantized", reason: layer.reason };
    }
    // In a quantized checkpoint a float Linear was left so when it was
    // written: nothing is to be quantized any more.
    if (q && layer.linear && local === "weight") {
      return leftFloat.has(layer.path)
        ? {
          name: e.name,
          action: "exclude",
          reason:
            `excluded when quantized (${q.library} ${q.method}), stored in float`,
        }
        : {
          name: e.name,
          action: "keep",
          reason: `not quantized by ${q.library} ${q.method}, stored in float`,
        };
    }
    if (layer.linear && local === "weight") {
      if (excluded(layer.path)) {
        return {
          name: e.name,
          action: "exclude",
          reason: "matched --exclude",
        };
      }
      return { name: e.name, action: "quantize", reason: layer.reason };
    }
    if (layer.linear) {
      return {
        name: e.name,
        action: "keep",
        reason: "bias of a Linear (kept as is)",
      };
    }
    if (e.info.shape.length < 2) {
      return {
        name: e.name,
        action: "keep",
        reason: `${e.info.shape.length}-D tensor`,
      };
    }
    return { name: e.name, action: "keep", reason: layer.reason };
  });
}
