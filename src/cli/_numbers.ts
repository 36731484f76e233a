/**
 * Numeric flag values, checked up front as usage errors naming the flag.
 *
 * @module
 */

import { type Parsed, str } from "./_args.ts";
import { UsageError } from "./_io.ts";

/** `--name <int>` at least `min`, or undefined when not given. */
export function intValue(
  command: string,
  p: Parsed,
  name: string,
  min: number,
): number | undefined {
  const text = str(p, name);
  if (text === undefined) return undefined;
  const n = text.trim() === "" ? NaN : Number(text);
  if (!Number.isSafeInteger(n) || n < min) {
    throw new UsageError(
      command,
      `--${name} must be an integer >= ${min}, got "${text}"`,
    );
  }
  return n;
}

/** `--name <number>` in [min, max], or undefined when not given. */
export function numberValue(
  command: string,
  p: Parsed,
  name: string,
  min: number,
  max: number,
  minOpen = false,
): number | undefined {
  const text = str(p, name);
  if (text === undefined) return undefined;
  const n = text.trim() === "" ? NaN : Number(text);
  if (!(Number.isFinite(n) && (minOpen ? n > min : n >= min) && n <= max)) {
    const range = max === Infinity
      ? `${minOpen ? ">" : ">="} ${min}`
      : `in ${minOpen ? "(" : "["}${min}, ${max}]`;
    throw new UsageError(
      command,
      `--${name} must be a number ${range}, got "${text}"`,
    );
  }
  return n;
}
