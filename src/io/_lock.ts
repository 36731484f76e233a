/**
 * One run per output: a lock file `.NAME.tinyq-lock` beside the output,
 * created exclusively (it appears whole, holding the owner's PID, through a
 * hard link), removed when the run ends. A lock whose PID no longer exists
 * was left by a killed run and is taken over.
 *
 * @module
 */

import { join } from "node:path";
import { CheckpointError, osReason } from "./checkpoint_error.ts";
import { pidAlive, sidecarName } from "./_sidecars.ts";

/** A held lock. */
export interface OutputLock {
  /** The lock file's path. */
  readonly path: string;
  /** Removes the lock file (synchronous, for signal handlers too). */
  release(): void;
  /** A sentence about a stale lock taken over, or null. */
  readonly note: string | null;
}

function ownerOf(path: string): number | null {
  try {
    const text = Deno.readTextFileSync(path);
    const pid = Number(text.split("\n", 1)[0]);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return -1;
    return null;
  }
}

// Places `content` at `path` only if nothing is there: written under a
// private name first and hard-linked, so no reader ever sees it half made.
// Where hard links do not work, an exclusive create does.
function createWhole(path: string, content: string): boolean {
  const mine = `${path}-${Deno.pid}`;
  try {
    Deno.writeTextFileSync(mine, content);
  } catch {
    try {
      Deno.writeTextFileSync(path, content, { createNew: true });
      return true;
    } catch (e) {
      if (e instanceof Deno.errors.AlreadyExists) return false;
      throw e;
    }
  }
  try {
    Deno.linkSync(mine, path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) return false;
    try {
      Deno.writeTextFileSync(path, content, { createNew: true });
      return true;
    } catch (e2) {
      if (e2 instanceof Deno.errors.AlreadyExists) return false;
      throw e2;
    }
  } finally {
    try {
      Deno.removeSync(mine);
    } catch { /* already gone */ }
  }
}

/**
 * Takes the lock of output `base` in folder `parent` (`display` is the output
 * as the user named it, for messages). Throws a {@linkcode CheckpointError}
 * when another live run holds it or the folder cannot be written.
 */
export function lockOutput(
  parent: string,
  base: string,
  display: string,
): OutputLock {
  const path = join(parent, sidecarName(base, "lock"));
  const content = `${Deno.pid}\n${display}\n`;
  let note: string | null = null;
  for (let attempt = 0; attempt < 3; attempt++) {
    let created: boolean;
    try {
      created = createWhole(path, content);
    } catch (e) {
      throw new CheckpointError(
        display,
        `cannot write in ${parent}: ${osReason(e)}`,
      );
    }
    if (created) {
      return {
        path,
        note,
        release: () => {
          // Only our own lock: a stale-lock recovery may have replaced it.
          if (ownerOf(path) !== Deno.pid) return;
          try {
            Deno.removeSync(path);
          } catch { /* gone */ }
        },
      };
    }
    const owner = ownerOf(path);
    if (owner === -1) continue; // released meanwhile: try again
    if (owner !== null && pidAlive(owner)) {
      throw new CheckpointError(
        display,
        `another tinyq run (process ${owner}) is writing this output; wait for it to finish`,
      );
    }
    if (owner === null) {
      throw new CheckpointError(
        display,
        `is locked by ${path}, which names no process; remove that file if no tinyq run is writing here`,
      );
    }
    // The owner is dead. Move its lock aside and check it is still the
    // dead one's before deleting it: another run may have taken it over.
    const aside = join(
      parent,
      `${sidecarName(base, "lock")}-stale-${Deno.pid}`,
    );
    try {
      Deno.renameSync(path, aside);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) continue;
      throw new CheckpointError(
        display,
        `cannot write in ${parent}: ${osReason(e)}`,
      );
    }
    if (ownerOf(aside) === owner) {
      Deno.removeSync(aside);
      note =
        `removed the lock ${path} of a run that no longer exists (process ${owner})`;
    } else {
      // Not the dead one's any more: put it back for its owner.
      try {
        Deno.linkSync(aside, path);
      } catch { /* a third run took the name; it holds the lock */ }
      Deno.removeSync(aside);
    }
  }
  throw new CheckpointError(
    display,
    "another tinyq run is writing this output; wait for it to finish",
  );
}
