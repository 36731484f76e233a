/**
 * Helpers of the "nothing lost" tests (issue 14): hashes of a whole folder
 * tree (hidden files, FIFOs and links included) to prove nothing outside the
 * intended output changed and no temporary file is left, and real `tinyq`
 * processes that can be held at a known point and signalled.
 */

import assert from "node:assert/strict";
import { join } from "node:path";

/** Every entry under `dir`: relative path → a hash of a file, or its kind. */
export async function tree(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string) => {
    for await (const e of Deno.readDir(join(dir, rel))) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      const info = await Deno.lstat(join(dir, r));
      if (info.isDirectory) {
        out.set(r + "/", "dir");
        await walk(r);
      } else if (info.isSymlink) {
        out.set(r, `link → ${await Deno.readLink(join(dir, r))}`);
      } else if (info.isFile) {
        const bytes = await Deno.readFile(join(dir, r));
        const digest = await crypto.subtle.digest("SHA-256", bytes);
        out.set(
          r,
          Array.from(
            new Uint8Array(digest),
            (b) => b.toString(16).padStart(2, "0"),
          ).join(""),
        );
      } else {
        out.set(r, info.isFifo ? "fifo" : "special");
      }
    }
  };
  await walk("");
  return new Map([...out].sort((a, b) => a[0] < b[0] ? -1 : 1));
}

/** `tree(dir)` without the entries under `skip` (the intended output). */
export async function treeBut(
  dir: string,
  skip: string,
): Promise<Map<string, string>> {
  const t = await tree(dir);
  for (const k of [...t.keys()]) {
    if (k === skip || k === skip + "/" || k.startsWith(skip + "/")) t.delete(k);
  }
  return t;
}

/** The path of `cli.ts`. */
export const CLI = new URL("../cli.ts", import.meta.url).pathname;

/** Options of {@linkcode spawnTinyq}. */
export interface SpawnOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Hold the run at its first hold point (TINYQ_TEST_HOLD). */
  hold?: string;
}

/** A running `deno run -A cli.ts …args` with piped stdout and stderr. */
export function spawnTinyq(
  args: string[],
  options: SpawnOptions = {},
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    ...(options.cwd ? { cwd: options.cwd } : {}),
    env: {
      NO_COLOR: "1",
      ...(options.hold ? { TINYQ_TEST_HOLD: options.hold } : {}),
      ...options.env,
    },
  }).spawn();
}

/** Decoded result of a process. */
export interface Finished {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
}

/** Waits for `child` to end (failing after `ms`). */
export async function finish(
  child: Deno.ChildProcess,
  ms = 120_000,
): Promise<Finished> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      reject(new Error(`tinyq did not finish within ${ms} ms`));
    }, ms);
  });
  try {
    const r = await Promise.race([child.output(), timeout]);
    const dec = new TextDecoder();
    return {
      code: r.code,
      signal: r.signal,
      stdout: dec.decode(r.stdout),
      stderr: dec.decode(r.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `tinyq …args` as a real process to its end. */
export function tinyq(
  args: string[],
  options: SpawnOptions = {},
): Promise<Finished> {
  return finish(spawnTinyq(args, options));
}

/**
 * Waits until the held run has written its PID to `marker` (its readiness),
 * failing after `ms` or if the process ends first.
 */
export async function ready(
  marker: string,
  child: Deno.ChildProcess,
  ms = 120_000,
): Promise<number> {
  let ended = false;
  child.status.then(() => ended = true);
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      const text = await Deno.readTextFile(marker);
      if (text.endsWith("\n")) return Number(text.trim());
    } catch { /* not yet */ }
    if (ended) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const r = await finish(child, 10_000).catch(() => null);
  throw new Error(
    `the run never reached its hold point (exit ${r?.code}): ${r?.stderr}`,
  );
}

/** A PID that belonged to a process that has ended. */
export async function deadPid(): Promise<number> {
  const child = new Deno.Command("true").spawn();
  await child.status;
  return child.pid;
}

/** Makes a FIFO at `path` (mkfifo). */
export async function mkfifo(path: string): Promise<void> {
  const r = await new Deno.Command("mkfifo", { args: [path] }).output();
  assert.ok(r.success, `mkfifo ${path}`);
}
