/**
 * What the CLI does on a signal: every terminating signal a program can
 * catch removes the temporary outputs and the locks of the writes in
 * progress (whatever command made them: quantize, dequantize, demo --out),
 * then exits with 128 + the signal's number, as a shell reports a process
 * the signal killed.
 *
 * @module
 */

import { removeActiveTemps } from "../io/atomic.ts";
import type { CliIO } from "./_io.ts";

/**
 * The signals handled, with their Linux numbers. Left to their default:
 * SIGKILL and SIGSTOP (cannot be caught), SIGPIPE (ignored by Deno, so a
 * closed pipe is a write error the CLI handles), SIGUSR1 (Deno, like Node,
 * opens the inspector on it: it does not end the process), and the signals of faults
 * (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT), after which
 * the process must not go on running code.
 */
export const HANDLED_SIGNALS: readonly (readonly [Deno.Signal, number])[] =
  Object.freeze(
    [
      ["SIGHUP", 1],
      ["SIGINT", 2],
      ["SIGQUIT", 3],
      ["SIGUSR2", 12],
      ["SIGALRM", 14],
      ["SIGTERM", 15],
      ["SIGSTKFLT", 16],
      ["SIGXCPU", 24],
      ["SIGXFSZ", 25],
      ["SIGVTALRM", 26],
      ["SIGPROF", 27],
      ["SIGIO", 29],
      ["SIGPWR", 30],
    ] as const,
  );

/**
 * Installs the handlers; returns the function that removes them. `io` gets
 * one line saying what was cleaned up (a write that fails is dropped: after
 * SIGHUP the terminal is usually gone).
 */
export function installSignalHandlers(io: CliIO): () => void {
  const installed: [Deno.Signal, () => void][] = [];
  for (const [signal, number] of HANDLED_SIGNALS) {
    const handler = () => {
      const removed = removeActiveTemps();
      try {
        io.err(
          `\ntinyq: interrupted by ${signal}${
            removed.length ? "; removed the partial output" : ""
          }\n`,
        );
      } catch { /* the terminal may be gone */ }
      Deno.exit(128 + number);
    };
    try {
      Deno.addSignalListener(signal, handler);
      installed.push([signal, handler]);
    } catch {
      // Not a signal of this OS (SIGPWR, SIGSTKFLT on macOS; all on Windows
      // but SIGINT and SIGBREAK).
    }
  }
  return () => {
    for (const [s, h] of installed) Deno.removeSignalListener(s, h);
  };
}
