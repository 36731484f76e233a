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
  const all: Options = {
    ...options,
    help: { type: "boolean", short: "h" },
    verbose: { type: "boolean", short: "v" },
  };
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options: all,
      strict: true,
      allowPositionals: true,
      tokens: true,
    });
  } catch (e) {
    throw new UsageError(command, parserMessage(e, args, all));
  }
  // A value flag given twice is a mistake parseArgs would hide (it keeps
  // the last): say so instead of guessing.
  const seen = new Map<string, string>();
  for (const tok of parsed.tokens ?? []) {
    if (tok.kind !== "option") continue;
    const o = all[tok.name];
    if (o?.type !== "string" || o.multiple) continue;
    const before = seen.get(tok.name);
    if (before !== undefined) {
      throw new UsageError(
        command,
        `--${tok.name} given twice (${JSON.stringify(before)} and ${
          JSON.stringify(tok.value ?? "")
        }); give it once`,
      );
    }
    seen.set(tok.name, tok.value ?? "");
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

/**
 * One line for a parseArgs error. Its "argument is ambiguous" (a value that
 * starts with a dash) runs to three lines of advice; the point is which
 * flag lacks a value and how to pass a dash-leading one.
 */
function parserMessage(
  e: unknown,
  args: readonly string[],
  options: Options,
): string {
  const text = e instanceof Error ? e.message : String(e);
  const ambiguous = /^Option '(-[^' ]+)' argument is ambiguous/.exec(text);
  if (ambiguous) {
    const given = ambiguous[1]!;
    const long = given.startsWith("--")
      ? given.slice(2)
      : Object.entries(options).find(([, o]) => o.short === given.slice(1))
        ?.[0] ?? given.slice(1);
    const i = args.findIndex((a) => a === given || a.startsWith(given));
    const value = i >= 0 && args[i] === given ? args[i + 1] : undefined;
    return value === undefined
      ? `--${long} needs a value`
      : `--${long} needs a value, and ${
        JSON.stringify(value)
      } looks like an option; to pass a value that starts with a dash, write --${long}=${value}`;
  }
  // Node's other messages run on with advice about "--": the first
  // sentence is the point.
  return text.split(/\.\s+(?=[A-Z])|\n/)[0]!.replace(/\.$/, "");
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
