/**
 * Finding the files of a checkpoint: a folder with `model.safetensors`, a
 * folder with shards and `model.safetensors.index.json`, or one
 * `.safetensors` file. Every path named by the index is checked to stay inside
 * the folder before anything is opened.
 *
 * @module
 */

import { basename, dirname, isAbsolute, join, relative } from "node:path";
import {
  CheckpointError,
  osReason,
  unlessNotFound,
} from "./_checkpoint_error.ts";

/** The name of the shard index. */
export const INDEX_NAME = "model.safetensors.index.json";
/** The name of a single-file checkpoint in a folder. */
export const SINGLE_NAME = "model.safetensors";

/** Where a checkpoint's files are. */
export interface Layout {
  /** The path as the user gave it. */
  readonly input: string;
  /** A folder, or a single file. */
  readonly kind: "folder" | "file";
  /** The folder (for a single file: the folder it is in). */
  readonly dir: string;
  /** Shard file names relative to `dir`, in order. */
  readonly shardNames: readonly string[];
  /** The index's tensor → shard map, or null without an index. */
  readonly weightMap: ReadonlyMap<string, string> | null;
  /** The parsed `config.json`, or null when there is none (or for a file). */
  readonly config: Record<string, unknown> | null;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function within(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel !== "" && !rel.startsWith("..") && !isAbsolute(rel);
}

/**
 * Checks that `name` (relative to `dir`) names a file inside `dir`, also once
 * symlinks are followed. One exception keeps Hugging Face cache snapshots
 * usable: `snapshots/<rev>/f` may link into the repository's own `blobs/`.
 * Returns the path to open.
 */
export async function insidePath(
  dir: string,
  name: string,
  subject: string,
  blame: string,
): Promise<string> {
  const bad = (why: string): never => {
    throw new CheckpointError(
      blame,
      `${subject} ${JSON.stringify(name)}, ${why}`,
    );
  };
  if (name === "" || name.includes("\0")) {
    bad("which is not a valid file name; refused");
  }
  if (isAbsolute(name) || /^[A-Za-z]:/.test(name) || name.includes("\\")) {
    bad("an absolute path outside the model folder; refused");
  }
  if (name.split("/").includes("..")) {
    bad("which leads outside the model folder; refused");
  }
  const path = join(dir, name);
  let real: string;
  let realDir: string;
  try {
    realDir = await Deno.realPath(dir);
    real = await Deno.realPath(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return bad("which does not exist");
    throw new CheckpointError(
      blame,
      `${subject} ${JSON.stringify(name)}: ${osReason(e)}`,
    );
  }
  if (!within(realDir, real)) {
    const blobs = join(dirname(dirname(realDir)), "blobs");
    const hfCache = basename(dirname(realDir)) === "snapshots" &&
      within(blobs, real);
    if (!hfCache) {
      bad(`a symlink to ${real}, outside the model folder; refused`);
    }
  }
  return path;
}

/** What a file that is not a regular file is, in words. */
export function fileKind(info: Deno.FileInfo): string {
  if (info.isFifo) return "a FIFO";
  if (info.isCharDevice || info.isBlockDevice) return "a device";
  if (info.isSocket) return "a socket";
  if (info.isDirectory) return "a folder";
  return "not a regular file";
}

/**
 * Checks that `path` (symlinks followed) is a regular file before it is
 * opened: opening a FIFO would wait forever for a writer.
 */
export async function assertRegularFile(
  path: string,
  blame: string = path,
): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    throw new CheckpointError(blame, `cannot read: ${osReason(e)}`);
  }
  if (!info.isFile) {
    throw new CheckpointError(
      blame,
      `is ${fileKind(info)}, not a regular file; refused`,
    );
  }
}

async function readJson(path: string, blame: string): Promise<unknown> {
  await assertRegularFile(path, blame);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new CheckpointError(blame, `cannot read: ${osReason(e)}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(
      blame,
      `not valid JSON (${osReason(e)}); fix or remove it`,
    );
  }
}

/** Reads and checks `config.json` in `dir`: absent → null; broken → error. */
export async function readConfig(
  dir: string,
): Promise<Record<string, unknown> | null> {
  const path = join(dir, "config.json");
  if (!(await unlessNotFound(Deno.stat(path)))) return null;
  await insidePath(dir, "config.json", "the file", path);
  const config = await readJson(path, path);
  if (!isPlainObject(config)) {
    throw new CheckpointError(path, "must be a JSON object; fix or remove it");
  }
  return config;
}

async function readIndex(dir: string): Promise<Map<string, string>> {
  const path = join(dir, INDEX_NAME);
  const raw = await readJson(path, path);
  if (!isPlainObject(raw) || !isPlainObject(raw.weight_map)) {
    throw new CheckpointError(path, `has no "weight_map" object`);
  }
  const map = new Map<string, string>();
  for (const [tensor, shard] of Object.entries(raw.weight_map)) {
    if (typeof shard !== "string") {
      throw new CheckpointError(
        path,
        `weight_map must map tensor names to file names, got ${
          JSON.stringify(shard)
        }`,
        tensor,
      );
    }
    map.set(tensor, shard);
  }
  if (map.size === 0) throw new CheckpointError(path, "weight_map is empty");
  return map;
}

/** Finds the files of the checkpoint at `input` (folder or file). */
export async function locate(input: string): Promise<Layout> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(input);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CheckpointError(input, "no such file or folder");
    }
    throw new CheckpointError(input, `cannot read: ${osReason(e)}`);
  }
  if (info.isFile) {
    return {
      input,
      kind: "file",
      dir: dirname(input),
      shardNames: [basename(input)],
      weightMap: null,
      config: null,
    };
  }
  if (!info.isDirectory) {
    throw new CheckpointError(
      input,
      `is ${fileKind(info)}, neither a regular file nor a folder`,
    );
  }
  const config = await readConfig(input);
  if (await unlessNotFound(Deno.stat(join(input, INDEX_NAME)))) {
    const weightMap = await readIndex(input);
    const names = [...new Set(weightMap.values())].sort();
    const blame = join(input, INDEX_NAME);
    for (const n of names) {
      const path = await insidePath(
        input,
        n,
        "weight_map names the shard",
        blame,
      );
      await assertRegularFile(path);
    }
    return {
      input,
      kind: "folder",
      dir: input,
      shardNames: names,
      weightMap,
      config,
    };
  }
  if (await unlessNotFound(Deno.stat(join(input, SINGLE_NAME)))) {
    await insidePath(input, SINGLE_NAME, "the file", join(input, SINGLE_NAME));
    await assertRegularFile(join(input, SINGLE_NAME));
    return {
      input,
      kind: "folder",
      dir: input,
      shardNames: [SINGLE_NAME],
      weightMap: null,
      config,
    };
  }
  const found: string[] = [];
  try {
    for await (const e of Deno.readDir(input)) {
      if (e.name.endsWith(".safetensors") && !e.isDirectory) found.push(e.name);
    }
  } catch (e) {
    throw new CheckpointError(input, `cannot list the folder: ${osReason(e)}`);
  }
  if (found.length === 0) {
    throw new CheckpointError(
      input,
      `no ${SINGLE_NAME}, ${INDEX_NAME} or other .safetensors file in this folder`,
    );
  }
  if (found.length > 1) {
    throw new CheckpointError(
      input,
      `${found.length} .safetensors files (${
        found.sort().slice(0, 3).join(", ")
      }` +
        `${
          found.length > 3 ? ", …" : ""
        }) but no ${INDEX_NAME} saying how they form one model`,
    );
  }
  await insidePath(input, found[0]!, "the file", join(input, found[0]!));
  await assertRegularFile(join(input, found[0]!));
  return {
    input,
    kind: "folder",
    dir: input,
    shardNames: found,
    weightMap: null,
    config,
  };
}
