/**
 * All-or-nothing output: everything is written under a temporary name beside
 * the destination and renamed into place only when complete. Temporary paths
 * of runs in progress are registered so that a signal handler can remove
 * them synchronously before the process exits.
 *
 * @module
 */

import {
  basename,
  dirname,
  isAbsolute,
  join,
  relative,
  resolve,
} from "node:path";
import {
  CheckpointError,
  osReason,
  unlessNotFound,
} from "./checkpoint_error.ts";
import { lockOutput } from "./_lock.ts";
import { sidecarName, sweepLeftovers } from "./_sidecars.ts";

// Synchronous undo actions of the writes in progress, by temporary path,
// and the release of the locks held (done after the undos).
const active = new Map<string, () => void>();
const locks = new Map<string, () => void>();
// Where the sentences about leftovers cleaned up go (the CLI's stderr).
let noteSink: ((line: string) => void) | null = null;

/**
 * Sends the sentences about what a run cleaned up before starting (leftovers
 * of dead runs, a stale lock) to `sink`; returns the function that stops it.
 */
export function onOutputNote(sink: (line: string) => void): () => void {
  noteSink = sink;
  return () => {
    if (noteSink === sink) noteSink = null;
  };
}

function note(line: string): void {
  try {
    noteSink?.(line);
  } catch { /* reporting never stops the work */ }
}

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

let held = false;

/**
 * Test-only: with `TINYQ_TEST_HOLD=<file>` in the environment, a run that has
 * taken its lock and created its temporary output writes its PID to `<file>`
 * and waits until `<file>` is deleted. The signal and concurrency tests use
 * it to act at a known point of a real run instead of guessing with sleeps.
 * Only the first hold point a process reaches holds.
 */
export async function holdForTest(): Promise<void> {
  if (held) return;
  let marker: string | undefined;
  try {
    // Asked only where granted: a library user is never prompted for it.
    const env = { name: "env", variable: "TINYQ_TEST_HOLD" } as const;
    if (Deno.permissions.querySync(env).state !== "granted") return;
    marker = Deno.env.get("TINYQ_TEST_HOLD");
  } catch {
    return; // no env permission: not a test
  }
  if (!marker) return;
  held = true;
  await Deno.writeTextFile(marker, `${Deno.pid}\n`);
  for (;;) {
    await new Promise((r) => setTimeout(r, 10));
    try {
      await Deno.lstat(marker);
    } catch {
      return;
    }
  }
}

/** Whether `path` (an existing folder) is a mount point. */
function isMountPoint(path: string, info: Deno.FileInfo): boolean {
  try {
    const parentInfo = Deno.statSync(dirname(path));
    if (info.dev !== null && parentInfo.dev !== info.dev) return true;
  } catch { /* fall through */ }
  if (Deno.build.os !== "linux") return false;
  const mountinfo = { name: "read", path: "/proc/self/mountinfo" } as const;
  try {
    if (Deno.permissions.querySync(mountinfo).state !== "granted") return false;
    const real = Deno.realPathSync(path);
    // Field 5 of each line is the mount point, with octal escapes.
    for (
      const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")
    ) {
      const field = line.split(" ")[4];
      if (!field) continue;
      const point = field.replace(
        /\\([0-7]{3})/g,
        (_, o) => String.fromCharCode(parseInt(o, 8)),
      );
      if (point === real) return true;
    }
  } catch { /* no /proc */ }
  return false;
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
  for (const release of locks.values()) {
    try {
      release();
    } catch { /* best effort */ }
  }
  locks.clear();
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

/** The refusal of an output that exists, without `--force`. */
export function existingOutputError(dest: string): CheckpointError {
  return new CheckpointError(
    dest,
    "already exists (use --force to replace it)",
  );
}

/** Options of {@linkcode writeAtomically}. */
export interface AtomicOptions {
  /** Replace an existing destination (only what `checkReplace` accepts). */
  force: boolean;
  /** Create the temporary output as a folder (else the callback creates a file). */
  folder: boolean;
  /** Paths that must never be written or replaced (the inputs). */
  inputs: readonly string[];
  /**
   * With `force`, throws unless the existing destination may be replaced
   * (see `_replace_check.ts`); without it, nothing existing is replaced.
   */
  checkReplace?: (existing: Deno.FileInfo, abs: string) => Promise<void>;
}

/**
 * Runs `fill(tmp)` to build the output under a temporary name in the
 * destination's folder, then renames it to `dest`. Holds the output's lock
 * throughout (a second run for the same output is refused), and first
 * removes what dead runs left for it. On any error the temporary output is
 * removed and the destination is left as it was.
 */
export async function writeAtomically<T>(
  dest: string,
  options: AtomicOptions,
  fill: (tmp: string) => Promise<T>,
): Promise<T> {
  const abs = resolve(dest);
  const parent = dirname(abs);
  const base = basename(abs);
  if (base === "" || abs === parent) {
    throw new CheckpointError(dest, "is the root folder; name a new folder");
  }
  const parentInfo = await unlessNotFound(Deno.lstat(parent)).catch(() => null);
  if (!parentInfo) {
    throw new CheckpointError(dest, `its folder ${parent} does not exist`);
  }
  const realDest = resolve(await realOrSelf(parent), base);
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
  const first = await unlessNotFound(Deno.lstat(abs)).catch(() => null);
  if (first && !first.isSymlink && isMountPoint(abs, first)) {
    throw new CheckpointError(
      dest,
      first.isDirectory
        ? `is a mount point, which cannot be replaced; write into it instead (--out ${
          join(dest, "NAME")
        })`
        : "is a mounted file, which cannot be replaced; choose another --out",
    );
  }
  const lock = lockOutput(parent, base, dest);
  locks.set(lock.path, lock.release);
  try {
    if (lock.note) note(lock.note);
    for (const line of await sweepLeftovers(parent, base, dest)) note(line);
    const existing = await unlessNotFound(Deno.lstat(abs));
    if (existing && !options.force) throw existingOutputError(dest);
    if (existing) {
      if (!options.checkReplace) {
        throw new CheckpointError(dest, "already exists; not replaced");
      }
      await options.checkReplace(existing, abs);
    }
    return await writeUnderLock(
      dest,
      abs,
      parent,
      base,
      existing,
      options,
      fill,
    );
  } finally {
    locks.delete(lock.path);
    lock.release();
  }
}

async function writeUnderLock<T>(
  dest: string,
  abs: string,
  parent: string,
  base: string,
  existing: Deno.FileInfo | null,
  options: AtomicOptions,
  fill: (tmp: string) => Promise<T>,
): Promise<T> {
  const tmp = join(parent, sidecarName(base, "tmp"));
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  active.set(tmp, () => removeSync(tmp));
  try {
    try {
      if (options.folder) await Deno.mkdir(tmp);
      else await Deno.writeFile(tmp, new Uint8Array(0));
    } catch (e) {
      throw new CheckpointError(
        dest,
        `cannot write in ${parent}: ${osReason(e)}`,
      );
    }
    await holdForTest();
    const result = await fill(tmp);
    if (existing) {
      const old = join(parent, sidecarName(base, "old"));
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
