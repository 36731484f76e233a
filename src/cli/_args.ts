/**
 * Argument parsing for the commands: node:util `parseArgs` in strict mode,
 * its errors turned into one-line usage errors.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import { UsageError } from "./_io.ts";

type Options = NonNullable<ParseArgsConfig["options"]>;

/** Parsed flags and positionals. */
export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

/**
 * Parses `args` for `tinyq <command>`, with `--help`/`-h` and
 * `--verbose`/`-v` (which `main` reads for stack traces) always known.
 * Throws {@linkcode UsageError} for unknown flags, missing values and wrong
 * positional counts.
 */
export function parseCommandArgs(
  command: string,
  args: readonly string[],
  options: Options,
  positionals: { min: number; max: number; names: string },
): Parsed {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options: {
        ...options,
        help: { type: "boolean", short: "h" },
        verbose: { type: "boolean", short: "v" },
      },
      strict: true,
      allowPositionals: true,
    });
  } catch (e) {
    // Node's messages run on with advice about "--"; the first sentence is the point.
    const msg = (e instanceof Error ? e.message : String(e)).split(
      /\.\s+(?=[A-Z])/,
    )[0]!.replace(/\.$/, "");
    throw new UsageError(command, msg);
  }
  const values = parsed.values as Parsed["values"];
  if (values.help) return { values, positionals: parsed.positionals };
  const n = parsed.positionals.length;
  if (n < positionals.min) {
    throw new UsageError(command, `missing ${positionals.names}`);
  }
  if (n > positionals.max) {
    throw new UsageError(
      command,
      `unexpected argument "${parsed.positionals[positionals.max]}"`,
    );
  }
  return { values, positionals: parsed.positionals };
}

/** A string flag's value (the last one when repeated), or undefined. */
export function str(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === "string" ? v : undefined;
}

/** A boolean flag. */
export function flag(p: Parsed, name: string): boolean {
  return p.values[name] === true;
}

/** A repeatable string flag's values. */
export function list(p: Parsed, name: string): string[] {
  const v = p.values[name];
  return Array.isArray(v) ? v : typeof v === "string" ? [v] : [];
}
