/**
 * What `--force` may replace: only what TinyQ itself writes at that path — a
 * single output file, or a folder that is a previous TinyQ output (its
 * shards' metadata says TinyQ wrote them) holding nothing but the files of
 * such an output. Anything else is refused before any work, saying why.
 *
 * @module
 */

import { join, relative } from "node:path";
import { CheckpointError } from "./checkpoint_error.ts";
import { INDEX_NAME, SINGLE_NAME } from "./_folder.ts";
import { EXPORT_METADATA_KEY } from "./formats/export.ts";

/** The `__metadata__` key a TinyQ dequantized output carries. */
export const DEQUANTIZED_BY_KEY = "dequantized_by";

const REFUSE = "--force replaces only an output TinyQ wrote, never other files";

/**
 * The `__metadata__` of the safetensors file at `path`; undefined when it is
 * not a safetensors file (or cannot be read).
 */
export async function safetensorsMetadata(
  path: string,
): Promise<Record<string, string> | null | undefined> {
  let file: Deno.FsFile;
  try {
    const info = await Deno.stat(path);
    if (!info.isFile) return undefined;
    file = await Deno.open(path, { read: true });
  } catch {
    return undefined;
  }
  try {
    const head = new Uint8Array(8);
    if ((await file.read(head)) !== 8) return undefined;
    const n = Number(new DataView(head.buffer).getBigUint64(0, true));
    if (n < 2 || n > 100_000_000) return undefined;
    const bytes = new Uint8Array(n);
    let done = 0;
    while (done < n) {
      const k = await file.read(bytes.subarray(done));
      if (k === null) return undefined;
      done += k;
    }
    const header = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof header !== "object" || header === null) return undefined;
    const meta = header.__metadata__;
    return typeof meta === "object" && meta !== null ? meta : null;
  } catch {
    return undefined;
  } finally {
    file.close();
  }
}

/** Whether a shard's metadata says TinyQ wrote it. */
export function writtenByTinyq(
  meta: Readonly<Record<string, string>> | null | undefined,
): boolean {
  if (!meta) return false;
  if (typeof meta[EXPORT_METADATA_KEY] === "string") return true;
  if (meta[DEQUANTIZED_BY_KEY]?.startsWith("tinyq ")) return true;
  try {
    return JSON.parse(meta.quantization ?? "null")?.library === "tinyq";
  } catch {
    return false;
  }
}

async function files(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      const path = join(dir, e.name);
      if (e.isDirectory) await walk(path);
      else out.push(relative(root, path));
    }
  };
  await walk(root);
  return out.sort();
}

/** Shard names of the checkpoint folder `dir`, or null when it is none. */
async function shardsOf(dir: string): Promise<string[] | null> {
  try {
    const index = JSON.parse(await Deno.readTextFile(join(dir, INDEX_NAME)));
    const map = index?.weight_map;
    if (typeof map !== "object" || map === null) return null;
    const names = [...new Set(Object.values(map))];
    return names.every((n) => typeof n === "string" && !n.includes(".."))
      ? names as string[]
      : null;
  } catch {
    // No index (or a broken one): a single-file checkpoint, or none.
  }
  const single = await Deno.stat(join(dir, SINGLE_NAME)).catch(() => null);
  return single?.isFile ? [SINGLE_NAME] : null;
}

/**
 * Throws a {@linkcode CheckpointError} unless `--force` may replace the
 * existing `abs` (`dest` as the user named it) with an output of `kind`
 * made of the files `planned` (relative paths; `alsoOurs` are names of
 * other files TinyQ writes in some output format).
 */
export async function checkReplaceable(
  dest: string,
  abs: string,
  existing: Deno.FileInfo,
  kind: "folder" | "file",
  planned: ReadonlySet<string>,
  alsoOurs: readonly string[],
): Promise<void> {
  const refuse = (why: string): never => {
    throw new CheckpointError(dest, `${why}; ${REFUSE}`);
  };
  if (existing.isSymlink) {
    refuse("is a symlink (remove it or choose another --out)");
  }
  if (kind === "file") {
    if (existing.isDirectory) {
      refuse("is a folder, and this run writes a single file");
    }
    if (!existing.isFile) refuse("is not a regular file");
    if ((await safetensorsMetadata(abs)) === undefined) {
      refuse("is not a safetensors file");
    }
    return;
  }
  if (!existing.isDirectory) {
    refuse("is a file, and this run writes a checkpoint folder");
  }
  const present = await files(abs).catch(() =>
    refuse("is a folder that cannot be listed")
  );
  if (present.length === 0) return; // an empty folder loses nothing
  const shards = await shardsOf(abs);
  if (!shards) {
    refuse(
      `is a folder that is not a checkpoint (no ${SINGLE_NAME} or ${INDEX_NAME})`,
    );
  }
  for (const s of shards!) {
    const meta = await safetensorsMetadata(join(abs, s));
    if (!writtenByTinyq(meta)) {
      refuse(
        `is a checkpoint TinyQ did not write (${s} has no TinyQ metadata)`,
      );
    }
  }
  const ours = new Set([
    ...planned,
    ...shards!,
    INDEX_NAME,
    "config.json",
    ...alsoOurs,
  ]);
  const foreign = present.filter((f) => !ours.has(f));
  if (foreign.length > 0) {
    refuse(
      `contains ${foreign.slice(0, 3).join(", ")}${
        foreign.length > 3 ? ` and ${foreign.length - 3} more` : ""
      }, which this run would not write (move ${
        foreign.length === 1 ? "it" : "them"
      } away or choose another --out)`,
    );
  }
}
