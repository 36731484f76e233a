/**
 * What a command writes to, so that tests can run the CLI in-process and the
 * real program writes to the process's stdout and stderr.
 *
 * @module
 */

/** The CLI's outputs. */
export interface CliIO {
  /** Writes to standard output. */
  out(text: string): void;
  /** Writes to standard error. */
  err(text: string): void;
  /** Whether standard error is a terminal (progress bars only then). */
  errIsTerminal: boolean;
  /** Terminal width in columns, when known. */
  columns(): number;
}

const encoder = new TextEncoder();

function writeAll(
  file: { writeSync(p: Uint8Array): number },
  text: string,
): void {
  const bytes = encoder.encode(text);
  let done = 0;
  while (done < bytes.length) done += file.writeSync(bytes.subarray(done));
}

/** The process's own stdout and stderr. */
export function processIO(): CliIO {
  return {
    out: (t) => writeAll(Deno.stdout, t),
    err: (t) => writeAll(Deno.stderr, t),
    errIsTerminal: Deno.stderr.isTerminal(),
    columns: () => {
      try {
        // A pseudo-terminal may report 0 columns.
        const { columns } = Deno.consoleSize();
        return columns >= 20 ? columns : 80;
      } catch {
        return 80;
      }
    },
  };
}

/** A usage error: exit code 2, one line. */
export class UsageError extends Error {
  /** Builds the error for `tinyq <command>`. */
  constructor(readonly command: string, message: string) {
    super(message);
    this.name = "UsageError";
  }
}
