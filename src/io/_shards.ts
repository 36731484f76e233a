/**
 * Opening a checkpoint's shards: every header read, each tensor in exactly
 * one shard, and the index (when there is one) agreeing with them.
 *
 * @module
 */

import { join } from "node:path";
import { openTensorFile, type TensorFile } from "./tensor_file.ts";
import type { CheckpointEntry } from "./checkpoint_entry.ts";
import { CheckpointError } from "./checkpoint_error.ts";
import { INDEX_NAME, type Layout } from "./_folder.ts";

/**
 * Opens each shard of `layout` into `files` (by shard name; the caller
 * closes them, also when this throws) and returns every tensor in shard
 * order, with the shard of each tensor name.
 */
export async function openShards(
  layout: Layout,
  files: Map<string, TensorFile>,
): Promise<{ entries: CheckpointEntry[]; shardOf: Map<string, string> }> {
  const entries: CheckpointEntry[] = [];
  const shardOf = new Map<string, string>();
  for (const shard of layout.shardNames) {
    const filePath = layout.kind === "file"
      ? layout.input
      : join(layout.dir, shard);
    const f = await openTensorFile(filePath);
    files.set(shard, f);
    for (const info of f.tensors) {
      const other = shardOf.get(info.name);
      if (other !== undefined) {
        throw new CheckpointError(
          filePath,
          `also in ${other}; a tensor must be in one shard`,
          info.name,
        );
      }
      shardOf.set(info.name, shard);
      entries.push({ name: info.name, shard, info });
    }
  }
  if (layout.weightMap) {
    const indexName = layout.indexName ?? INDEX_NAME;
    const indexPath = join(layout.dir, indexName);
    for (const [name, shard] of layout.weightMap) {
      if (shardOf.get(name) !== shard) {
        throw new CheckpointError(
          indexPath,
          `weight_map puts it in ${shard}, which has no tensor of that name`,
          name,
        );
      }
    }
    for (const e of entries) {
      if (!layout.weightMap.has(e.name)) {
        throw new CheckpointError(
          join(layout.dir, e.shard),
          `is not in the weight_map of ${indexName}`,
          e.name,
        );
      }
    }
  }
  return { entries, shardOf };
}
