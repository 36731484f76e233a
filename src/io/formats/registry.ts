/**
 * The checkpoint formats the CLI writes (`tinyq quantize --format <name>`)
 * and that {@linkcode Checkpoint.open} recognises when reading a quantized
 * checkpoint back: TinyQ's own layout, compressed-tensors `pack-quantized`
 * (what vLLM serves) and optimum-quanto qint8. Adding a format is one entry
 * here.
 *
 * @module
 */

import type { CheckpointFormat } from "./format.ts";
import { compressedTensorsFormat } from "./compressed_tensors.ts";
import { quantoFormat } from "./quanto.ts";
import { tinyqFormat } from "./tinyq.ts";

/** Every known format; the first is the default. */
export const FORMATS: readonly CheckpointFormat[] = [
  tinyqFormat,
  compressedTensorsFormat,
  quantoFormat,
];

/**
 * The format called `name`, or undefined.
 *
 * @example
 * ```ts
 * import { findFormat } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.equal(findFormat("tinyq")?.name, "tinyq");
 * assert.equal(findFormat("compressed-tensors")?.name, "compressed-tensors");
 * assert.equal(findFormat("gguf"), undefined);
 * ```
 */
export function findFormat(name: string): CheckpointFormat | undefined {
  return FORMATS.find((f) => f.name === name);
}
