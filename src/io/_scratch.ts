/**
 * Scratch folders (the demo's model and outputs): made in the system's
 * temporary folder under a name holding the PID, registered so that a
 * signal removes them, removed when done; those of dead runs are removed by
 * the next run.
 *
 * @module
 */

import { join } from "node:path";
import { holdForTest, registerTemp } from "./atomic.ts";
import { pidAlive } from "./_sidecars.ts";

const NAME = /^tinyq-([a-z0-9]+)-(\d+)-/;
// Written inside each scratch folder: only folders holding it are swept.
const MARK = ".tinyq-scratch";

function tempRoot(): string {
  try {
    const env = { name: "env", variable: "TMPDIR" } as const;
    if (Deno.permissions.querySync(env).state !== "granted") return "/tmp";
    return Deno.env.get("TMPDIR") || "/tmp";
  } catch {
    return "/tmp";
  }
}

/**
 * Removes the scratch folders that runs no longer alive left in the
 * temporary folder; returns one sentence per folder removed.
 */
export async function sweepScratch(
  root: string = tempRoot(),
): Promise<string[]> {
  const notes: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(root));
  } catch {
    return notes;
  }
  for (const e of entries) {
    const m = NAME.exec(e.name);
    if (!m || !e.isDirectory || pidAlive(Number(m[2]))) continue;
    const path = join(root, e.name);
    try {
      const mark = (await Deno.readTextFile(join(path, MARK))).trim();
      if (mark !== m[2]) continue;
      await Deno.remove(path, { recursive: true });
      notes.push(
        `removed ${path}, left by a run that no longer exists (process ${
          m[2]
        })`,
      );
    } catch { /* not ours, or gone */ }
  }
  return notes;
}

/**
 * Runs `fn` with a fresh scratch folder `tinyq-<purpose>-<pid>-…` and removes
 * the folder afterwards, also on a signal (see `src/cli/_signals.ts`).
 * Leftovers of dead runs are swept first and reported to `onNote`.
 */
export async function withScratchDir<T>(
  purpose: string,
  fn: (dir: string) => Promise<T>,
  onNote: (line: string) => void = () => {},
): Promise<T> {
  for (const line of await sweepScratch()) onNote(line);
  const dir = await Deno.makeTempDir({
    prefix: `tinyq-${
      purpose.toLowerCase().replace(/[^a-z0-9]/g, "")
    }-${Deno.pid}-`,
  });
  const unregister = registerTemp(dir);
  try {
    await Deno.writeTextFile(join(dir, MARK), `${Deno.pid}\n`);
    await holdForTest();
    return await fn(dir);
  } finally {
    unregister();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
