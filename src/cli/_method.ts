/**
 * The `--method`, `--group-size` and `--asymmetric` flags the commands share,
 * checked up front as usage errors, and the words that describe a scheme.
 *
 * @module
 */

import type { CheckpointMethod } from "../io/weight_scheme.ts";
import type { WeightScheme } from "../io/formats/format.ts";
import { INT4_GROUP_SIZES } from "../quant/int4.ts";
import { UsageError } from "./_io.ts";

/** The methods of `--method`, default first. */
export const CLI_METHODS: readonly CheckpointMethod[] = Object.freeze([
  "w8a16",
  "w8a32",
  "w8a8",
  "w4a16",
]);

/** `--method` and `--group-size`, validated. */
export function parseMethodFlags(
  command: string,
  methodText: string | undefined,
  groupText: string | undefined,
): { method: CheckpointMethod; groupSize?: number } {
  const method = (methodText ?? CLI_METHODS[0]!).toLowerCase();
  if (!(CLI_METHODS as readonly string[]).includes(method)) {
    throw new UsageError(
      command,
      `unknown --method "${methodText}"; expected ${
        CLI_METHODS.slice(0, -1).join(", ")
      } or ${CLI_METHODS.at(-1)}`,
    );
  }
  if (groupText === undefined) return { method: method as CheckpointMethod };
  if (method !== "w4a16") {
    throw new UsageError(
      command,
      `--group-size applies to --method w4a16 only (${method} has one int8 scale per output row)`,
    );
  }
  const groupSize = Number(groupText);
  if (!(INT4_GROUP_SIZES as readonly number[]).includes(groupSize)) {
    throw new UsageError(
      command,
      `--group-size must be ${INT4_GROUP_SIZES.join(", ")}, got "${groupText}"`,
    );
  }
  return { method: "w4a16", groupSize };
}

/** `int8 per-channel symmetric`, `int4 group 128 asymmetric`. */
export function describeScheme(s: WeightScheme): string {
  return `${s.bits === 4 ? `int4 group ${s.groupSize}` : "int8 per-channel"} ${
    s.symmetric ? "symmetric" : "asymmetric"
  }`;
}
