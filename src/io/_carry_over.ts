/**
 * What the checkpoint writers (`quantizeCheckpoint`, `dequantizeCheckpoint`,
 * `saveModule`) share: how a source checkpoint's tensors, metadata, config
 * and files carry over to the output.
 *
 * @module
 */

import type { TensorInfo } from "./safetensors.ts";
import type { TensorFile } from "./tensor_file.ts";
import type { Checkpoint, CheckpointEntry } from "./checkpoint.ts";
import { EXPORT_METADATA_KEY } from "./formats/export.ts";
import type { Unit } from "./_shard_writer.ts";
import { INDEX_NAME, PYTORCH_INDEX_NAME } from "./_folder.ts";
import { DEQUANTIZED_BY_KEY } from "./_replace_check.ts";
import type { OutputJob } from "./_output_dir.ts";

/**
 * A shard's `__metadata__`: `"format": "pt"`, the source shard's entries but
 * the quantization it records, then `extra`.
 */
export function shardMetadata(
  file: TensorFile | null,
  extra: Readonly<Record<string, string>> = {},
): Map<string, string> {
  const m = new Map<string, string>([["format", "pt"]]);
  for (const [k, v] of Object.entries(file?.metadata ?? {})) {
    if (
      k !== "quantization" && k !== EXPORT_METADATA_KEY &&
      k !== DEQUANTIZED_BY_KEY
    ) m.set(k, v);
  }
  for (const [k, v] of Object.entries(extra)) m.set(k, v);
  return m;
}

/** Where the bytes of entry `e` of `ckpt` are. */
export function sourceOf(
  ckpt: Checkpoint,
  e: CheckpointEntry,
): { path: string; info: TensorInfo } {
  return { path: ckpt.shardPath(e.shard), info: e.info };
}

/** A unit that copies entry `e` of `ckpt` byte for byte. */
export function copyUnit(ckpt: Checkpoint, e: CheckpointEntry): Unit {
  return {
    kind: "copy",
    spec: { name: e.name, dtype: e.info.dtype, shape: e.info.shape },
    src: sourceOf(ckpt, e),
  };
}

/**
 * The output job's fields that come from the input checkpoint: its kind,
 * the folder whose other files are copied (all but `alsoConsumed` and what
 * the writer rewrites), the paths never to write, and its index.
 */
export function jobInput(
  ckpt: Checkpoint,
  alsoConsumed: Iterable<string> = [],
): Pick<OutputJob, "kind" | "inputDir" | "inputs" | "consumed" | "indexed"> {
  const dir = ckpt.kind === "folder" ? ckpt.dir : null;
  return {
    kind: ckpt.kind,
    inputDir: dir,
    inputs: [dir ?? ckpt.path],
    consumed: new Set([
      ...ckpt.shardNames,
      INDEX_NAME,
      PYTORCH_INDEX_NAME,
      "config.json",
      ...alsoConsumed,
    ]),
    indexed: ckpt.indexed,
  };
}

/**
 * The output's `config.json`: the input's without its `quantization_config`,
 * plus `block` and then `update`; null when the input has none.
 */
export function outputConfig(
  ckpt: Checkpoint,
  block: Record<string, unknown> | null,
  update?: (config: Record<string, unknown>) => Record<string, unknown>,
): Record<string, unknown> | null {
  if (!ckpt.config) return null;
  const c: Record<string, unknown> = { ...ckpt.config };
  delete c.quantization_config;
  // An empty block (quanto's) means the format records nothing in config.json.
  if (block && Object.keys(block).length > 0) c.quantization_config = block;
  return update ? update(c) : c;
}

/** The path of the module whose `weight` tensor `name` is, or null. */
export function weightOwner(name: string): string | null {
  if (name === "weight") return ""; // a root-level Linear (nn.Linear's state dict)
  return name.endsWith(".weight") ? name.slice(0, -".weight".length) : null;
}
