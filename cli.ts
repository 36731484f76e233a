#!/usr/bin/env -S deno run -A
/**
 * The `tinyq` command line: quantize Hugging Face safetensors checkpoints to
 * int8, inspect them, evaluate the error, and turn them back into floats.
 *
 * ```sh
 * deno run -A jsr:@tinyq/tinyq/cli quantize ./model --out ./model-int8
 * deno install -g -A -n tinyq jsr:@tinyq/tinyq/cli   # then: tinyq --help
 * ```
 *
 * Exit status: 0 on success, 1 for bad input or a failure (one line on stderr
 * naming the file, tensor or flag; a stack trace only with `--verbose`), 2 for
 * a usage error, 128 + the signal's number when interrupted (SIGINT 130,
 * SIGTERM 143, SIGHUP 129, SIGQUIT 131, …; the partial output is removed
 * first). A failed write to stdout or stderr (a closed pipe, `/dev/full`)
 * stops that stream's report but not the work: the exit status is the
 * work's.
 *
 * @module
 */

import { TINYQ_VERSION } from "./src/io/formats/tinyq.ts";
import { type CliIO, processIO, UsageError } from "./src/cli/_io.ts";
import { guardIO } from "./src/cli/_safe_io.ts";
import { installSignalHandlers } from "./src/cli/_signals.ts";
import { onOutputNote } from "./src/io/atomic.ts";
import { demoCommand } from "./src/cli/demo.ts";
import { dequantizeCommand } from "./src/cli/dequantize.ts";
import { evalCommand } from "./src/cli/eval.ts";
import { generateCommand } from "./src/cli/generate.ts";
import { perplexityCommand } from "./src/cli/perplexity.ts";
import { inspectCommand } from "./src/cli/inspect.ts";
import { quantizeCommand } from "./src/cli/quantize.ts";

export type { CliIO } from "./src/cli/_io.ts";

const HELP =
  `tinyq ${TINYQ_VERSION} — 8-bit and 4-bit weight quantization of safetensors checkpoints

Usage: tinyq <command> [options]

Commands:
  quantize <input> --out <path>      quantize the Linear layers: int8 (W8A16, W8A32,
                                     W8A8) or 4-bit groups (W4A16)
  inspect <input>                    tensors, what would be quantized and why, backend
  dequantize <input> --out <path>    back to a plain float checkpoint
  eval <original> <quantized>        weight and output error per layer, and a verdict
  eval <original>                    every scheme side by side: bits, size, error
  generate <model> --prompt <text>   run a model (float or quantized) and
                                     stream its text, with tok/s
  perplexity <model>                 perplexity of a text; --schemes: every
                                     scheme's ppl, KL and top-1 vs float
  demo                               TinyQ's quick start on TinyStories-656K

Run 'tinyq <command> --help' for a command's options.
Options: -h, --help  this help;  --version  print the version
Environment: TINYQ_BACKEND=auto|cpu|webgpu chooses the forward backend.
`;

type Command = (args: readonly string[], io: CliIO) => Promise<number>;

const COMMANDS: Readonly<Record<string, Command>> = {
  quantize: quantizeCommand,
  inspect: inspectCommand,
  dequantize: dequantizeCommand,
  eval: evalCommand,
  demo: demoCommand,
  generate: generateCommand,
  perplexity: perplexityCommand,
};

/**
 * Runs the `tinyq` command line on `args` (without the program name) and
 * returns the exit status instead of exiting, so it can be called from code
 * and tests. Output goes to `io` (the process's stdout and stderr by default).
 *
 * @param args The command line, e.g. `["quantize", "model", "--out", "q"]`.
 * @param rawIO Where to write; defaults to the process's streams.
 * @returns 0 on success, 1 for bad input or a failure, 2 for a usage error.
 *
 * @example Quantize the demo checkpoint from code
 * ```ts
 * import { main } from "@tinyq/tinyq/cli";
 * import { makeDemoCheckpoint } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * await makeDemoCheckpoint(`${dir}/model`, { layers: 1, hidden: 16 });
 * const quiet = { out: () => {}, err: () => {}, errIsTerminal: false, columns: () => 80 };
 * assert.equal(await main(["quantize", `${dir}/model`, "--out", `${dir}/q`], quiet), 0);
 * assert.equal(await main(["quantize", "--no-such-flag"], quiet), 2);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function main(
  args: readonly string[],
  rawIO: CliIO = processIO(),
): Promise<number> {
  // Reporting never aborts the work: a failed write to stdout or stderr
  // (a closed pipe, a full disk) only stops that stream.
  const io = guardIO(rawIO);
  const [name, ...rest] = args;
  const verbose = rest.includes("--verbose") || rest.includes("-v");
  if (
    name === undefined || name === "--help" || name === "-h" || name === "help"
  ) {
    if (name === undefined) {
      io.err(HELP);
      return 2;
    }
    io.out(HELP);
    return 0;
  }
  if (name === "--version" || name === "-V") {
    io.out(`tinyq ${TINYQ_VERSION}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command || !Object.hasOwn(COMMANDS, name)) {
    io.err(
      `tinyq: unknown command "${name}" (commands: ${
        Object.keys(COMMANDS).join(", ")
      }; see tinyq --help)\n`,
    );
    return 2;
  }
  const uninstall = installSignalHandlers(io);
  const stopNotes = onOutputNote((line) => io.err(`tinyq: note: ${line}\n`));
  try {
    return await command(rest, io);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(
        `tinyq ${e.command}: ${e.message} (see tinyq ${e.command} --help)\n`,
      );
      return 2;
    }
    const message = e instanceof Error ? e.message : String(e);
    io.err(`tinyq ${name}: error: ${message.replace(/\s*\n\s*/g, " ")}\n`);
    if (verbose && e instanceof Error && e.stack) io.err(e.stack + "\n");
    return 1;
  } finally {
    stopNotes();
    uninstall();
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
