/**
 * Which format wrote a checkpoint's quantization, if any, and the [out, in]
 * shape of each quantized Linear it records.
 *
 * @module
 */

import { join } from "node:path";
import type { TensorInfo } from "./safetensors.ts";
import type { TensorFile } from "./tensor_file.ts";
import type {
  CheckpointFormat,
  QuantizationSummary,
} from "./formats/format.ts";
import {
  CheckpointError,
  osReason,
  unlessNotFound,
} from "./checkpoint_error.ts";
import { fileKind, type Layout } from "./_folder.ts";

/** A quantization a format recognised in a checkpoint. */
export interface DetectedQuantization {
  /** What the checkpoint records. */
  readonly summary: QuantizationSummary;
  /** The format that recognised it. */
  readonly format: CheckpointFormat;
  /** [out, in] of each quantized Linear whose shape could be read. */
  readonly shapes: ReadonlyMap<string, [number, number]>;
}

/**
 * Asks each of `formats` in turn whether it wrote the checkpoint; the first
 * that says so wins. A format that recognises the checkpoint but cannot read
 * it throws, and the error names the file it read.
 */
export async function detectQuantization(
  layout: Layout,
  files: ReadonlyMap<string, TensorFile>,
  shardOf: ReadonlyMap<string, string>,
  tensors: ReadonlyMap<string, TensorInfo>,
  formats: readonly CheckpointFormat[],
): Promise<DetectedQuantization | null> {
  const firstFile = files.get(layout.shardNames[0]!)!;
  for (const format of formats) {
    const texts: Record<string, string> = {};
    for (const name of format.detectFiles ?? []) {
      const text = await readBeside(layout, name);
      if (text !== null) texts[name] = text;
    }
    let summary: QuantizationSummary | null;
    try {
      summary = format.detect(firstFile.metadata, layout.config, {
        tensors,
        files: texts,
      });
    } catch (e) {
      throw new CheckpointError(
        Object.keys(texts).length > 0
          ? join(layout.dir, Object.keys(texts)[0]!)
          : firstFile.path,
        (e as Error).message,
      );
    }
    if (summary) {
      const shapes = await quantizedShapes(
        summary,
        format,
        tensors,
        files,
        shardOf,
      );
      return { summary, format, shapes };
    }
  }
  return null;
}

/** The text of file `name` beside a checkpoint folder's shards, or null. */
async function readBeside(
  layout: Layout,
  name: string,
): Promise<string | null> {
  if (layout.kind !== "folder") return null;
  const path = join(layout.dir, name);
  // A FIFO would block the read forever: only a regular file is read.
  const info = await unlessNotFound(Deno.stat(path)).catch(() => null);
  if (info && !info.isFile) {
    throw new CheckpointError(
      path,
      `is ${fileKind(info)}, not a regular file; refused`,
    );
  }
  try {
    return await unlessNotFound(Deno.readTextFile(path));
  } catch (e) {
    throw new CheckpointError(path, `cannot read: ${osReason(e)}`);
  }
}

/**
 * [out, in] of each quantized Linear: the format's own answer (compressed-
 * tensors keeps it in `weight_shape`) or the shape of its first stored
 * tensor. A layer whose shape cannot be read is left out; decoding it names
 * what is wrong.
 */
async function quantizedShapes(
  summary: QuantizationSummary,
  format: CheckpointFormat,
  tensors: ReadonlyMap<string, TensorInfo>,
  files: ReadonlyMap<string, TensorFile>,
  shardOf: ReadonlyMap<string, string>,
): Promise<Map<string, [number, number]>> {
  const read = async (name: string) => {
    const shard = shardOf.get(name);
    return shard === undefined ? null : await files.get(shard)!.read(name);
  };
  const shapes = new Map<string, [number, number]>();
  for (const p of summary.modules) {
    if (format.linearShape) {
      try {
        shapes.set(p, await format.linearShape(p, read, tensors));
      } catch {
        // Reported by decodeLinear when the layer is used.
      }
      continue;
    }
    const anchor = format.storedNames(p).find((n) => tensors.has(n));
    const shape = anchor === undefined ? null : tensors.get(anchor)!.shape;
    // Packed 4-bit weights hold two inputs per byte.
    const perElement = summary.bits === 4 ? 2 : 1;
    if (shape?.length === 2) shapes.set(p, [shape[0]!, shape[1]! * perElement]);
  }
  return shapes;
}
