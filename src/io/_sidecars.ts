/**
 * The hidden files TinyQ keeps beside an output while writing it — the
 * temporary output, the previous output during a `--force` swap, the lock —
 * their names, and the clean-up of those a dead run left behind.
 *
 * @module
 */

import { join } from "node:path";

/** What a sidecar is for. */
export type SidecarKind = "tmp" | "old" | "lock";

const encoder = new TextEncoder();
// The longest suffix: ".tinyq-lock-stale-" or ".tinyq-tmp-" and a PID of up
// to 10 digits, plus the leading dot. File names are at most 255 bytes.
const SUFFIX_BUDGET = 32;
const NAME_MAX = 255;

function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (const b of encoder.encode(text)) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

/**
 * The stem of the sidecar names of output `base`: the name itself, or for a
 * name too long to take a suffix, its first bytes (whole characters) and a
 * hash of all of it, so sidecars of different long names stay apart.
 */
export function sidecarStem(base: string): string {
  if (encoder.encode(base).byteLength + SUFFIX_BUDGET <= NAME_MAX) return base;
  const room = NAME_MAX - SUFFIX_BUDGET - 9;
  let stem = "";
  let bytes = 0;
  for (const ch of base) {
    const n = encoder.encode(ch).byteLength;
    if (bytes + n > room) break;
    stem += ch;
    bytes += n;
  }
  return `${stem}~${fnv1a(base)}`;
}

/** `.NAME.tinyq-tmp-PID`, `.NAME.tinyq-old-PID` or `.NAME.tinyq-lock`. */
export function sidecarName(
  base: string,
  kind: SidecarKind,
  pid: number = Deno.pid,
): string {
  const stem = `.${sidecarStem(base)}.tinyq-${kind}`;
  return kind === "lock" ? stem : `${stem}-${pid}`;
}

/**
 * Whether process `pid` exists. On Linux `/proc` says; elsewhere `kill -0`.
 * In doubt, alive: a live run's files are never taken for leftovers.
 */
export function pidAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  if (pid === Deno.pid) return true;
  if (Deno.build.os === "linux") {
    try {
      // Without the right to look, never prompt: assume alive.
      const proc = { name: "read", path: `/proc/${pid}` } as const;
      if (Deno.permissions.querySync(proc).state !== "granted") return true;
      Deno.statSync(`/proc/${pid}`);
      return true;
    } catch (e) {
      return !(e instanceof Deno.errors.NotFound);
    }
  }
  try {
    const run = { name: "run", command: "kill" } as const;
    if (Deno.permissions.querySync(run).state !== "granted") return true;
    return new Deno.Command("kill", {
      args: ["-0", String(pid)],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return true;
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|]/g, "\\$&");
}

/**
 * Removes what dead runs (their PID gone) left beside the output `base` in
 * `parent`: temporary outputs are deleted; a previous output that a run
 * killed in the middle of a `--force` swap had moved aside is put back when
 * the output is missing, else deleted. Returns one sentence per action.
 */
export async function sweepLeftovers(
  parent: string,
  base: string,
  display: string,
): Promise<string[]> {
  const re = new RegExp(
    `^\\.${escapeRegExp(sidecarStem(base))}\\.tinyq-(tmp|old)-(\\d+)$`,
  );
  const found: { name: string; kind: string; pid: number }[] = [];
  try {
    for await (const e of Deno.readDir(parent)) {
      const m = re.exec(e.name);
      if (m) found.push({ name: e.name, kind: m[1]!, pid: Number(m[2]) });
    }
  } catch {
    return []; // An unlistable folder fails later, with its own message.
  }
  const notes: string[] = [];
  // Temporary outputs first, so a restored output is never swept.
  found.sort((a, b) => a.kind === b.kind ? 0 : a.kind === "tmp" ? -1 : 1);
  for (const f of found) {
    if (pidAlive(f.pid)) continue;
    const path = join(parent, f.name);
    if (f.kind === "old") {
      const dest = join(parent, base);
      let destExists = true;
      try {
        await Deno.lstat(dest);
      } catch {
        destExists = false;
      }
      if (!destExists) {
        await Deno.rename(path, dest);
        notes.push(
          `put back ${display}, which a dead run (process ${f.pid}) had moved to ${path} while replacing it`,
        );
        continue;
      }
    }
    await Deno.remove(path, { recursive: true });
    notes.push(
      `removed ${path}, left by a run that no longer exists (process ${f.pid})`,
    );
  }
  return notes;
}
