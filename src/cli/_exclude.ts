/**
 * The warning for an `--exclude` entry that matches no Linear layer (a typo
 * would otherwise quantize the layer without a word).
 *
 * @module
 */

import { unmatchedExcludes } from "../quant/replace.ts";
import type { CliIO } from "./_io.ts";

/** Writes one warning line per entry of `exclude` matching none of `paths`. */
export function warnUnmatchedExcludes(
  io: CliIO,
  exclude: readonly string[],
  paths: readonly string[],
): void {
  for (const x of unmatchedExcludes(exclude, paths)) {
    io.err(
      `tinyq: warning: --exclude ${
        JSON.stringify(x)
      } matches no Linear layer; nothing was excluded by it (see 'tinyq inspect' for the layer names)\n`,
    );
  }
}
