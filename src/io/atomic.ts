/**
 * All-or-nothing output: everything is written under a temporary name beside
 * the destination and renamed into place only when complete. Temporary paths
 * of runs in progress are registered so that a signal handler can remove
 * them synchronously before the process exits.
 *
 * @module
 */

import { basename, dirname, isAbsolute, relative, resolve } from "node:path";
import {
  CheckpointError,
  osReason,
  unlessNotFound,
} from "./_checkpoint_error.ts";

// Synchronous undo actions of the writes in progress, by temporary path.
const active = new Map<string, () => void>();

function removeSync(path: string): void {
  // A write still in flight may add a file while the folder is being
  // removed (ENOTEMPTY): try again.
  for (let attempt = 1;; attempt++) {
    try {
      Deno.removeSync(path, { recursive: true });
      return;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      if (attempt === 3) throw e;
    }
  }
}

/**
 * Registers another temporary path (a demo's scratch folder) for removal by
 * {@linkcode removeActiveTemps}; returns the function that unregisters it.
 */
export function registerTemp(path: string): () => void {
  active.set(path, () => removeSync(path));
  return () => active.delete(path);
}

/**
 * Undoes every write in progress, synchronously (for signal handlers): the
 * temporary outputs are removed and an output being replaced with `--force`
 * is put back. Returns the temporary paths removed.
 *
 * @example Call it from your own signal handler
 * ```ts
 * import { removeActiveTemps } from "./quantize_checkpoint.ts";
 * import assert from "node:assert/strict";
 * const onSigint = () => {
 *   removeActiveTemps();
 *   Deno.exit(130);
 * };
 * assert.equal(typeof onSigint, "function");
 * assert.deepEqual(removeActiveTemps(), []); // nothing is being written now
 * ```
 */
export function removeActiveTemps(): string[] {
  const removed: string[] = [];
  for (const [path, undo] of active) {
    try {
      undo();
      removed.push(path);
    } catch {
      // Best effort: the process is exiting.
    }
  }
  active.clear();
  return removed;
}

async function realOrSelf(path: string): Promise<string> {
  try {
    return await Deno.realPath(path);
  } catch {
    return resolve(path);
  }
}

function inside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
}

/** Options of {@linkcode writeAtomically}. */
export interface AtomicOptions {
  /** Replace an existing destination. */
  force: boolean;
  /** Create the temporary output as a folder (else the callback creates a file). */
  folder: boolean;
  /** Paths that must never be written or replaced (the inputs). */
  inputs: readonly string[];
}

/**
 * Runs `fill(tmp)` to build the output under a temporary name in the
 * destination's folder, then renames it to `dest`. On any error the
 * temporary output is removed and the destination is left as it was.
 */
export async function writeAtomically<T>(
  dest: string,
  options: AtomicOptions,
  fill: (tmp: string) => Promise<T>,
): Promise<T> {
  const abs = resolve(dest);
  const parent = dirname(abs);
  const parentInfo = await unlessNotFound(Deno.lstat(parent)).catch(() => null);
  if (!parentInfo) {
    throw new CheckpointError(dest, `its folder ${parent} does not exist`);
  }
  const realDest = resolve(await realOrSelf(parent), basename(abs));
  for (const input of options.inputs) {
    const realIn = await realOrSelf(input);
    if (inside(realIn, realDest)) {
      throw new CheckpointError(
        dest,
        `is the input ${input} or inside it; inputs are never written`,
      );
    }
    if (inside(realDest, realIn)) {
      throw new CheckpointError(
        dest,
        `contains the input ${input}; choose another output`,
      );
    }
  }
  const existing = await unlessNotFound(Deno.lstat(abs));
  if (existing && !options.force) {
    throw new CheckpointError(
      dest,
      "already exists (use --force to replace it)",
    );
  }
  const tmp = resolve(parent, `.${basename(abs)}.tinyq-tmp-${Deno.pid}`);
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  active.set(tmp, () => removeSync(tmp));
  try {
    if (options.folder) {
      try {
        await Deno.mkdir(tmp);
      } catch (e) {
        throw new CheckpointError(
          dest,
          `cannot write in ${parent}: ${osReason(e)}`,
        );
      }
    }
    const result = await fill(tmp);
    if (existing) {
      const old = resolve(parent, `.${basename(abs)}.tinyq-old-${Deno.pid}`);
      await Deno.remove(old, { recursive: true }).catch(() => {});
      // Until the new output is in place, an interrupt puts the old one back.
      active.set(tmp, () => {
        removeSync(tmp);
        try {
          Deno.lstatSync(abs);
        } catch {
          Deno.renameSync(old, abs);
        }
      });
      await Deno.rename(abs, old);
      try {
        await Deno.rename(tmp, abs);
      } catch (e) {
        await Deno.rename(old, abs);
        throw e;
      }
      active.delete(tmp);
      await Deno.remove(old, { recursive: true });
    } else {
      await Deno.rename(tmp, abs);
      active.delete(tmp);
    }
    return result;
  } catch (e) {
    active.delete(tmp);
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    if (
      e instanceof Deno.errors.PermissionDenied ||
      e instanceof Deno.errors.NotCapable
    ) {
      throw new CheckpointError(
        dest,
        `cannot write: ${osReason(e)}`,
        undefined,
        { cause: e },
      );
    }
    throw e;
  }
}
