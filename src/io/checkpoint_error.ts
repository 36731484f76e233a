/**
 * The error of the checkpoint layer: a model folder, index or config that is
 * wrong, or an output that cannot be written.
 *
 * @module
 */

/**
 * A checkpoint problem, as one line: `<file>: [tensor "<name>": ]<problem>`.
 *
 * @example
 * ```ts
 * import { CheckpointError } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const e = new CheckpointError("m/config.json", "not valid JSON");
 * assert.equal(e.message, "m/config.json: not valid JSON");
 * ```
 */
export class CheckpointError extends Error {
  /** The file or folder concerned, as the user named it. */
  readonly file: string;
  /** The tensor concerned, where there is one. */
  readonly tensor?: string;
  /** The problem alone, without the file and tensor prefix. */
  readonly detail: string;

  /** Builds the error; `tensor` is quoted into the message when given. */
  constructor(
    file: string,
    detail: string,
    tensor?: string,
    options?: ErrorOptions,
  ) {
    super(
      `${file}: ${
        tensor === undefined ? "" : `tensor ${JSON.stringify(tensor)}: `
      }${detail}`,
      options,
    );
    this.name = "CheckpointError";
    this.file = file;
    if (tensor !== undefined) this.tensor = tensor;
    this.detail = detail;
  }
}

/** The message of an OS error without Deno's trailing `: op 'path'`. */
export function osReason(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).replace(
    /: \w+ '.*'$/s,
    "",
  );
}

/** What `op` gives, or null when the file it needs does not exist. */
export async function unlessNotFound<T>(op: Promise<T>): Promise<T | null> {
  try {
    return await op;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}
