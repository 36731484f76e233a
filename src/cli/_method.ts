/**
 * The `--method`, `--group-size` and `--asymmetric` flags the commands share,
 * checked up front as usage errors.
 *
 * @module
 */

import {
  DEFAULT_METHOD,
  isQuantMethod,
  METHOD_NAMES,
  METHODS,
  type QuantMethod,
} from "../quant/schemes.ts";
import { INT4_GROUP_SIZES } from "../quant/int4.ts";
import { UsageError } from "./_io.ts";

/** The methods of `--method`, default first. */
export const CLI_METHODS: readonly QuantMethod[] = Object.freeze([
  DEFAULT_METHOD,
  ...METHOD_NAMES.filter((m) => m !== DEFAULT_METHOD),
]);

/** `--method` and `--group-size`, validated. */
export function parseMethodFlags(
  command: string,
  methodText: string | undefined,
  groupText: string | undefined,
): { method: QuantMethod; groupSize?: number } {
  const method = (methodText ?? CLI_METHODS[0]!).toLowerCase();
  if (!isQuantMethod(method)) {
    throw new UsageError(
      command,
      `unknown --method "${methodText}"; expected ${
        CLI_METHODS.slice(0, -1).join(", ")
      } or ${CLI_METHODS.at(-1)}`,
    );
  }
  if (groupText === undefined) return { method };
  if (METHODS[method].layout.bits !== 4) {
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
  return { method, groupSize };
}
