/**
 * Which modules of a checkpoint are `Linear` layers, and why: the family
 * table chosen from `config.json` (see `_families.ts`), else the generic rule;
 * modules a quantized checkpoint records as quantized are reported as such.
 * {@linkcode Checkpoint.layers} is the way in.
 *
 * @module
 */

import type { DType } from "../dtype.ts";
import type { CheckpointEntry } from "./checkpoint_entry.ts";
import type { FormatLayer, QuantizationSummary } from "./formats/format.ts";
import { CheckpointError } from "./checkpoint_error.ts";
import { classifyModule, type FamilyChoice } from "./_families.ts";

/** What TinyQ makes of one module that holds tensors. */
export interface LayerInfo {
  /** Dotted module path (`""` for tensors without a dot). */
  readonly path: string;
  /** Quantizable Linear layer. */
  readonly linear: boolean;
  /** Already quantized by TinyQ (in a quantized checkpoint). */
  readonly quantized: boolean;
  /** Weight stored [in, out] (GPT-2 Conv1D). */
  readonly transposed: boolean;
  /** Why, in words (`"llama table: self_attn.q_proj"`). */
  readonly reason: string;
  /** Output features of a Linear. */
  readonly outFeatures?: number;
  /** Input features of a Linear. */
  readonly inFeatures?: number;
  /** Dtype of a Linear's weight. */
  readonly dtype?: DType;
}

/** A Linear layer of a checkpoint as an output format sees it. */
export function formatLayer(l: LayerInfo): FormatLayer {
  return {
    path: l.path,
    outFeatures: l.outFeatures!,
    inFeatures: l.inFeatures!,
    transposed: l.transposed,
  };
}

/** What the classification reads of an open checkpoint. */
export interface LayerSource {
  /** Every tensor, in data order. */
  readonly entries: readonly CheckpointEntry[];
  /** The module a tensor belongs to and its name there. */
  split(name: string): [path: string, local: string];
  /** The entry of tensor `name`, or undefined. */
  entry(name: string): CheckpointEntry | undefined;
  /** The path of shard `name` on disk (for errors). */
  shardPath(shard: string): string;
  /** The family table (or the generic rule) to apply. */
  readonly choice: FamilyChoice;
  /** The quantization the checkpoint records, or null. */
  readonly quantization: QuantizationSummary | null;
  /** The name of the format that wrote it (when quantized). */
  readonly formatName: string | undefined;
  /** [out, in] of each quantized Linear, where known. */
  readonly shapes: ReadonlyMap<string, readonly [number, number]>;
}

/**
 * Every module that holds tensors, with TinyQ's verdict: Linear or not, and
 * why. Throws {@linkcode CheckpointError} when a module the family table
 * calls Linear is not one (weight not 2-D, not float).
 */
export function classifyLayers(src: LayerSource): LayerInfo[] {
  const modules = new Map<
    string,
    Map<string, { dtype: DType; shape: readonly number[] }>
  >();
  for (const e of src.entries) {
    const [path, local] = src.split(e.name);
    let m = modules.get(path);
    if (!m) modules.set(path, m = new Map());
    m.set(local, e.info);
  }
  const parents = new Set<string>();
  for (const path of modules.keys()) {
    let p = path;
    while (p.includes(".")) {
      p = p.slice(0, p.lastIndexOf("."));
      parents.add(p);
    }
    if (path !== "") parents.add("");
  }
  const quantized = new Set(src.quantization?.modules ?? []);
  const layers: LayerInfo[] = [];
  for (const [path, tensors] of modules) {
    if (quantized.has(path)) {
      const q = src.shapes.get(path);
      layers.push({
        path,
        linear: false,
        quantized: true,
        transposed: src.quantization!.transposed.includes(path),
        reason: `quantized (${src.formatName} ${src.quantization!.method})`,
        ...(q ? { outFeatures: q[0], inFeatures: q[1] } : {}),
      });
      continue;
    }
    const v = classifyModule(src.choice, {
      path,
      tensors,
      hasChildren: parents.has(path),
    });
    if ("error" in v) {
      const e = src.entry(v.tensor)!;
      throw new CheckpointError(src.shardPath(e.shard), v.error, v.tensor);
    }
    if (v.linear) {
      const w = tensors.get("weight")!;
      const [a, b] = w.shape as [number, number];
      layers.push({
        path,
        linear: true,
        quantized: false,
        transposed: v.transposed,
        reason: v.reason,
        outFeatures: v.transposed ? b : a,
        inFeatures: v.transposed ? a : b,
        dtype: w.dtype,
      });
    } else {
      layers.push({
        path,
        linear: false,
        quantized: false,
        transposed: false,
        reason: v.reason,
      });
    }
  }
  return layers;
}
