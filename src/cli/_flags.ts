/**
 * Flags several commands share, checked up front as usage errors: where the
 * output goes (`--out`, `--max-shard-size`) and its layout (`--format`).
 *
 * @module
 */

import type { CheckpointFormat } from "../io/formats/format.ts";
import { findFormat, FORMATS } from "../io/formats/registry.ts";
import { parseSize } from "../io/quantize_checkpoint.ts";
import {
  checkFormatScheme,
  quantizationSummary,
} from "../io/quantization_summary.ts";
import { type QuantMethod, weightSchemeOf } from "../quant/schemes.ts";
import { type Parsed, str } from "./_args.ts";
import { UsageError } from "./_io.ts";

/** `--out <path>`, which the command requires. */
export function outFlag(command: string, p: Parsed): string {
  const out = str(p, "out");
  if (out === undefined || out === "") {
    throw new UsageError(command, "missing --out <path>");
  }
  return out;
}

/** `--max-shard-size <size>` in bytes, or undefined when not given. */
export function maxShardSizeFlag(
  command: string,
  p: Parsed,
): number | undefined {
  const text = str(p, "max-shard-size");
  if (text === undefined) return undefined;
  const size = parseSize(text);
  if (size === undefined) {
    throw new UsageError(
      command,
      `invalid --max-shard-size "${text}"; expected a size such as 2GB, 500MB or 1GiB`,
    );
  }
  return size;
}

/** The format `--format <name>` names, or null when not given. */
export function formatFlag(
  command: string,
  p: Parsed,
): CheckpointFormat | null {
  const name = str(p, "format");
  if (name === undefined) return null;
  const format = findFormat(name);
  if (!format) {
    throw new UsageError(
      command,
      `unknown --format "${name}"; known formats: ${
        FORMATS.map((f) => f.name).join(", ")
      }`,
    );
  }
  return format;
}

/**
 * Refuses, as a usage error, a `--format` that cannot record `--method` and
 * its scheme (quanto with w8a8, compressed-tensors with asymmetric w8a8, any
 * format without 4-bit storage with w4a16), before any file is opened.
 */
export function checkFormatMethod(
  command: string,
  format: CheckpointFormat,
  method: QuantMethod,
  options: { groupSize?: number; asymmetric?: boolean },
): void {
  try {
    const scheme = weightSchemeOf(method, options);
    checkFormatScheme(format, method, scheme);
    // What the format writes for an empty model: its refusals are the
    // ones it would make after reading the checkpoint.
    const s = quantizationSummary(method, scheme, new Map(), [], []);
    format.fileMetadata(s);
    format.configBlock(s);
    format.extraFiles(s);
  } catch (e) {
    throw new UsageError(command, e instanceof Error ? e.message : String(e));
  }
}
