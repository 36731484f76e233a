/**
 * The CLI's outputs as the commands see them: text a file or tensor name
 * brings in cannot drive the terminal (control characters are escaped), and
 * a failed write (a closed pipe, a full disk) stops that stream's reporting
 * but never the work.
 *
 * @module
 */

import type { CliIO } from "./_io.ts";

// The one control sequence TinyQ itself writes: the progress bar's
// "return and clear the line", always at the start of a write.
const CLEAR_LINE = "\r\x1b[2K";

/**
 * `text` with C0 controls (but newline and tab, unless `allowLines` is
 * false: a table cell), DEL, C1 controls and the bidirectional overrides
 * written as `\xNN` / `\uNNNN`, so that a tensor name holding an escape
 * sequence is shown, not obeyed.
 *
 * @example
 * ```ts ignore
 * escapeControls("a\x1b[31mb") // "a\\x1b[31mb"
 * ```
 */
export function escapeControls(text: string, allowLines = true): string {
  return text.replace(
    allowLines
      // deno-lint-ignore no-control-regex
      ? /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g
      // deno-lint-ignore no-control-regex
      : /[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g,
    (c) => {
      const code = c.charCodeAt(0);
      return code < 0x100
        ? `\\x${code.toString(16).padStart(2, "0")}`
        : `\\u${code.toString(16).padStart(4, "0")}`;
    },
  );
}

function clean(text: string): string {
  return text.startsWith(CLEAR_LINE)
    ? CLEAR_LINE + escapeControls(text.slice(CLEAR_LINE.length))
    : escapeControls(text);
}

/** A guarded {@linkcode CliIO}, and what went wrong with its streams. */
export interface GuardedIO extends CliIO {
  /** The error that stopped stdout, or null. */
  readonly outFailure: unknown;
  /** The error that stopped stderr, or null. */
  readonly errFailure: unknown;
}

/**
 * The error that stopped `io`'s stdout (a {@linkcode GuardedIO}'s), or null:
 * how a command whose output is the work itself (`generate`) stops early.
 */
export function stdoutFailure(io: CliIO): unknown {
  return "outFailure" in io ? io.outFailure : null;
}

/**
 * Wraps `io`: text is escaped; the first failed write to a stream turns
 * that stream off (later writes are dropped) instead of throwing into the
 * command. A stdout failure other than a closed pipe is noted once on
 * stderr, since the report it held is lost.
 */
export function guardIO(io: CliIO): GuardedIO {
  let outFailure: unknown = null;
  let errFailure: unknown = null;
  const err = (text: string) => {
    if (errFailure !== null) return;
    try {
      io.err(clean(text));
    } catch (e) {
      errFailure = e;
    }
  };
  return {
    get outFailure() {
      return outFailure;
    },
    get errFailure() {
      return errFailure;
    },
    out(text: string) {
      if (outFailure !== null) return;
      try {
        io.out(clean(text));
      } catch (e) {
        outFailure = e;
        if (!(e instanceof Deno.errors.BrokenPipe)) {
          const why = e instanceof Error ? e.message : String(e);
          err(
            `tinyq: warning: cannot write to stdout (${why}); the rest of the report is dropped, the work goes on\n`,
          );
        }
      }
    },
    err,
    get errIsTerminal() {
      return io.errIsTerminal && errFailure === null;
    },
    columns: () => io.columns(),
  };
}
