/**
 * {@linkcode CheckpointTensor}: one tensor of an open checkpoint, read from
 * disk only when loaded.
 *
 * @module
 */

import type { DType } from "../dtype.ts";
import { type LazyTensor, Tensor } from "../tensor.ts";
import type { CheckpointEntry, ShardFiles } from "./checkpoint_entry.ts";

/**
 * A tensor of a checkpoint, read when loaded. GPT-2's Conv1D weights are
 * transposed on load, so `shape` is the Linear shape [out, in].
 *
 * @example
 * ```ts
 * import { Checkpoint, CheckpointTensor, makeDemoCheckpoint } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * await makeDemoCheckpoint(dir, { layers: 1, hidden: 16 });
 * using ckpt = await Checkpoint.open(dir);
 * const lazy = new CheckpointTensor(ckpt, ckpt.entry("model.norm.weight")!);
 * assert.deepEqual(lazy.shape, [16]);
 * assert.equal((await lazy.load()).dtype, "bf16");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class CheckpointTensor implements LazyTensor {
  /** The checkpoint it belongs to. */
  readonly checkpoint: ShardFiles;
  /** Its entry. */
  readonly entry: CheckpointEntry;
  /** Whether `load()` transposes the stored [in, out] matrix. */
  readonly transposed: boolean;

  /** Wraps `entry` of `checkpoint`. */
  constructor(
    checkpoint: ShardFiles,
    entry: CheckpointEntry,
    transposed = false,
  ) {
    this.checkpoint = checkpoint;
    this.entry = entry;
    this.transposed = transposed;
  }

  /** The element type. */
  get dtype(): DType {
    return this.entry.info.dtype;
  }

  /** The dimensions (transposed ones swapped). */
  get shape(): readonly number[] {
    const s = this.entry.info.shape;
    return this.transposed ? [s[1]!, s[0]!] : s;
  }

  /** Reads the tensor (and transposes it where needed). */
  async load(): Promise<Tensor> {
    const t = await this.checkpoint.file(this.entry.shard).read(
      this.entry.name,
    );
    if (!this.transposed) return t;
    const [rows, cols] = t.shape as [number, number];
    const src = t.data;
    const dst = new (src.constructor as new (n: number) => typeof src)(
      src.length,
    );
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        (dst as Uint16Array)[c * rows + r] =
          (src as Uint16Array)[r * cols + c]!;
      }
    }
    return new Tensor(dst, [cols, rows], t.dtype);
  }
}
