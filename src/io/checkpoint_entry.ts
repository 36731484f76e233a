/**
 * {@linkcode CheckpointEntry} (one tensor of a checkpoint: its name, shard
 * and place there) and {@linkcode ShardFiles} (what reads a shard's
 * tensors): the types the checkpoint reader, its lazy tensors and the shard
 * opener share, in a file of their own so that none imports another in a
 * circle.
 *
 * @module
 */

import type { Tensor } from "../tensor.ts";
import type { TensorInfo } from "./safetensors.ts";

/** One tensor of a checkpoint: where it lives. */
export interface CheckpointEntry {
  /** Full tensor name. */
  readonly name: string;
  /** The shard's file name (relative to the folder). */
  readonly shard: string;
  /** Dtype, shape and position in the shard. */
  readonly info: TensorInfo;
}

/** Opens the tensors of a checkpoint's shards (a `Checkpoint` is one). */
export interface ShardFiles {
  /** The open file of shard `name`. */
  file(name: string): { read(tensor: string): Promise<Tensor> };
}
