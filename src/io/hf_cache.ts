/**
 * Models in the Hugging Face cache, found offline: a model argument that is
 * not a path but reads `owner/name` (optionally `owner/name@revision`)
 * resolves to `models--owner--name/snapshots/<commit>/` in the hub cache,
 * the commit read from `refs/<revision>` (default `main`) or given as a
 * 40-digit hash. The cache folders are those of `huggingface_hub`:
 * `$HF_HUB_CACHE`, `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub` and
 * `~/.cache/huggingface/hub`, in that order, each one that is set. Nothing is
 * downloaded; a miss says where it looked and how to download.
 *
 * @module
 */

import { join } from "node:path";
import { CheckpointError, osReason } from "./checkpoint_error.ts";

const ID =
  /^([A-Za-z0-9][A-Za-z0-9._-]*)\/([A-Za-z0-9][A-Za-z0-9._-]*)(?:@([A-Za-z0-9][A-Za-z0-9._\/-]*))?$/;

/** A parsed hub model id. */
export interface HubModelId {
  /** `owner/name`. */
  readonly repo: string;
  /** The revision asked for (`main` when none). */
  readonly revision: string;
}

/**
 * Parses `owner/name` or `owner/name@revision`; null for anything else
 * (including names with `..`, which no hub repository has).
 *
 * @example
 * ```ts
 * import { parseHubModelId } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.deepEqual(parseHubModelId("facebook/opt-125m@v1"), { repo: "facebook/opt-125m", revision: "v1" });
 * assert.equal(parseHubModelId("./models/x"), null);
 * ```
 */
export function parseHubModelId(arg: string): HubModelId | null {
  const m = ID.exec(arg);
  if (!m || arg.includes("..")) return null;
  return { repo: `${m[1]}/${m[2]}`, revision: m[3] ?? "main" };
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no env permission: as if unset
  }
}

/**
 * The hub cache folders to search, in order, without duplicates; a variable
 * that cannot be read (no env permission) counts as unset.
 *
 * @example
 * ```ts
 * import { hubCacheDirs } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.ok(Array.isArray(hubCacheDirs()));
 * ```
 */
export function hubCacheDirs(): string[] {
  const dirs: string[] = [];
  const hub = env("HF_HUB_CACHE");
  if (hub) dirs.push(hub);
  const home = env("HF_HOME");
  if (home) dirs.push(join(home, "hub"));
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) dirs.push(join(xdg, "huggingface", "hub"));
  const user = env("HOME") ?? env("USERPROFILE");
  if (user) dirs.push(join(user, ".cache", "huggingface", "hub"));
  return [...new Set(dirs)];
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/**
 * The snapshot folder of hub model `arg` in the local cache (searching
 * `dirs`, by default {@linkcode hubCacheDirs}). Throws
 * {@linkcode CheckpointError} naming `arg`, the folders searched and the
 * download command when it is not there.
 *
 * @example
 * ```ts
 * import { resolveHubModel } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const cache = await Deno.makeTempDir();
 * const repo = `${cache}/models--acme--tiny`;
 * await Deno.mkdir(`${repo}/snapshots/0123abc`, { recursive: true });
 * await Deno.mkdir(`${repo}/refs`);
 * await Deno.writeTextFile(`${repo}/refs/main`, "0123abc");
 * assert.equal(await resolveHubModel("acme/tiny", [cache]), `${repo}/snapshots/0123abc`);
 * await Deno.remove(cache, { recursive: true });
 * ```
 */
export async function resolveHubModel(
  arg: string,
  dirs: readonly string[] = hubCacheDirs(),
): Promise<string> {
  const id = parseHubModelId(arg);
  if (!id) throw new CheckpointError(arg, "no such file or folder");
  const folder = `models--${id.repo.replace("/", "--")}`;
  const notes: string[] = [];
  for (const cache of dirs) {
    const repo = join(cache, folder);
    if (!(await isDir(repo))) continue;
    let commit = id.revision;
    if (!/^[0-9a-f]{40}$/.test(commit)) {
      const ref = join(repo, "refs", ...commit.split("/"));
      try {
        commit = (await Deno.readTextFile(ref)).trim();
      } catch (e) {
        notes.push(
          e instanceof Deno.errors.NotFound
            ? `${repo} has no revision "${id.revision}"`
            : `${ref}: ${osReason(e)}`,
        );
        continue;
      }
      if (!/^[0-9a-f]{7,64}$/.test(commit)) {
        notes.push(`${ref} does not hold a commit hash`);
        continue;
      }
    }
    const snapshot = join(repo, "snapshots", commit);
    if (await isDir(snapshot)) return snapshot;
    notes.push(`${snapshot} is missing (an interrupted download?)`);
  }
  const where = dirs.length === 0
    ? "no cache folder is known (set HF_HUB_CACHE or HF_HOME)"
    : `looked in ${dirs.map((d) => join(d, folder)).join(", ")}`;
  throw new CheckpointError(
    arg,
    `no such file or folder, and not in the Hugging Face cache (${where}${
      notes.length ? `; ${notes.join("; ")}` : ""
    }); download it with: huggingface-cli download ${id.repo}${
      id.revision === "main" ? "" : ` --revision ${id.revision}`
    }`,
  );
}
