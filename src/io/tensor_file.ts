/**
 * {@linkcode TensorFile}: what the checkpoint layer reads a weights file
 * through — a safetensors file or a PyTorch `.bin` — and
 * {@linkcode openTensorFile}, which picks the reader by the file's first
 * bytes (a zip or a legacy pickle is PyTorch's; anything else is read as
 * safetensors, whose reader names what is wrong with it).
 *
 * @module
 */

import type { LazyTensor, Tensor } from "../tensor.ts";
import { SafetensorsFile, type TensorInfo } from "./safetensors.ts";
import { PytorchFile } from "./pytorch/state_dict.ts";

export { PytorchFile } from "./pytorch/state_dict.ts";

/** An open weights file, read one tensor at a time. */
export interface TensorFile {
  /** The path it was opened with. */
  readonly path: string;
  /** The safetensors `__metadata__`, or null (always null for a `.bin`). */
  readonly metadata: Readonly<Record<string, string>> | null;
  /** Every tensor, in data order. */
  readonly tensors: readonly TensorInfo[];
  /** The entry of tensor `name`, or undefined. */
  get(name: string): TensorInfo | undefined;
  /** Reads tensor `name`'s bytes (contiguous, little-endian). */
  readBytes(name: string): Promise<Uint8Array>;
  /** Reads tensor `name`. */
  read(name: string): Promise<Tensor>;
  /** Tensor `name`, read on `load()`. */
  lazy(name: string): LazyTensor;
  /** Closes the file. */
  close(): void;
  /** Closes the file (for `using`). */
  [Symbol.dispose](): void;
}

/**
 * Opens the weights file at `path`: a `torch.save` zip (or a legacy PyTorch
 * pickle, refused with a clear message) as a {@linkcode PytorchFile},
 * anything else as a {@linkcode SafetensorsFile}.
 *
 * @example
 * ```ts
 * import { openTensorFile } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * using f = await openTensorFile("tests/fixtures/pytorch/llama_bin/pytorch_model.bin");
 * assert.equal(f.get("lm_head.weight")?.dtype, "bf16");
 * ```
 */
export async function openTensorFile(path: string): Promise<TensorFile> {
  const head = new Uint8Array(8);
  try {
    using f = await Deno.open(path, { read: true });
    let n = 0;
    while (n < 8) {
      const r = await f.read(head.subarray(n));
      if (r === null) break;
      n += r;
    }
  } catch {
    // The reader below reports why the file cannot be opened.
  }
  // A safetensors file starts with its header length (u64, at most 10^8, so
  // bytes 4–7 are zero); a zip with "PK\x03\x04" and a version and flags; the
  // legacy format with the pickle of its magic number (PROTO 2, LONG1 10).
  const zip = head[0] === 0x50 && head[1] === 0x4b && head[2] === 3 &&
    head[3] === 4 && head.subarray(4).some((b) => b !== 0);
  const legacy = head[0] === 0x80 && head[1] === 0x02 && head[2] === 0x8a &&
    head[3] === 0x0a;
  const pytorch = zip || legacy;
  return pytorch
    ? await PytorchFile.open(path)
    : await SafetensorsFile.open(path);
}
