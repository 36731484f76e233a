/**
 * Finding the files of a checkpoint: a folder with `model.safetensors`, a
 * folder with shards and `model.safetensors.index.json`, one `.safetensors`
 * file, or the same in PyTorch's format (`pytorch_model.bin`, shards with
 * `pytorch_model.bin.index.json`, one `.bin` file). Safetensors win where a
 * folder has both, as in transformers. Every path named by the index is checked to stay inside
 * the folder before anything is opened.
 *
 * @module
 */

import { basename, dirname, isAbsolute, join, relative } from "node:path";
import {
  CheckpointError,
  osReason,
  unlessNotFound,
} from "./checkpoint_error.ts";
import { parseHubModelId, resolveHubModel } from "./hf_cache.ts";

/** The name of the shard index. */
export const INDEX_NAME = "model.safetensors.index.json";
/** The name of a single-file checkpoint in a folder. */
export const SINGLE_NAME = "model.safetensors";
/** The shard index of a PyTorch checkpoint. */
export const PYTORCH_INDEX_NAME = "pytorch_model.bin.index.json";
/** A single-file PyTorch checkpoint in a folder. */
export const PYTORCH_SINGLE_NAME = "pytorch_model.bin";

/**
 * The output name of input shard `name`: safetensors shards keep theirs,
 * `pytorch_model.bin` becomes `model.safetensors` and
 * `pytorch_model-00001-of-00002.bin` `model-00001-of-00002.safetensors`.
 */
export function outputShardName(name: string): string {
  if (name.endsWith(".safetensors")) return name;
  const stem = name.replace(/\.(bin|pt|pth)$/, "");
  return `${stem.replace(/^pytorch_model(?=$|-)/, "model")}.safetensors`;
}

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
  /** The index's file name, or null without an index. */
  readonly indexName: string | null;
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

async function readIndex(
  dir: string,
  indexName: string,
): Promise<Map<string, string>> {
  const path = join(dir, indexName);
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
      // Not a path: a Hugging Face id (`owner/name[@rev]`) is looked up in the cache.
      if (parseHubModelId(input)) {
        return await locate(await resolveHubModel(input));
      }
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
      indexName: null,
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
  const folder = (
    shardNames: string[],
    weightMap: Map<string, string> | null = null,
    indexName: string | null = null,
  ): Layout => ({
    input,
    kind: "folder",
    dir: input,
    shardNames,
    weightMap,
    indexName,
    config,
  });
  const exists = async (name: string) =>
    await unlessNotFound(Deno.stat(join(input, name))) !== null;
  for (const indexName of [INDEX_NAME]) {
    if (await exists(indexName)) return await indexed(input, indexName, folder);
  }
  if (await exists(SINGLE_NAME)) {
    await insidePath(input, SINGLE_NAME, "the file", join(input, SINGLE_NAME));
    await assertRegularFile(join(input, SINGLE_NAME));
    return folder([SINGLE_NAME]);
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
    if (await exists(PYTORCH_INDEX_NAME)) {
      return await indexed(input, PYTORCH_INDEX_NAME, folder);
    }
    if (await exists(PYTORCH_SINGLE_NAME)) {
      const path = join(input, PYTORCH_SINGLE_NAME);
      await insidePath(input, PYTORCH_SINGLE_NAME, "the file", path);
      await assertRegularFile(path);
      return folder([PYTORCH_SINGLE_NAME]);
    }
    throw new CheckpointError(
      input,
      `no ${SINGLE_NAME}, ${INDEX_NAME} or other .safetensors file in this folder` +
        ` (nor ${PYTORCH_SINGLE_NAME} or ${PYTORCH_INDEX_NAME})`,
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
  return folder(found);
}

async function indexed(
  input: string,
  indexName: string,
  folder: (
    names: string[],
    map: Map<string, string>,
    indexName: string,
  ) => Layout,
): Promise<Layout> {
  const weightMap = await readIndex(input, indexName);
  const names = [...new Set(weightMap.values())].sort();
  const blame = join(input, indexName);
  for (const n of names) {
    const path = await insidePath(
      input,
      n,
      "weight_map names the shard",
      blame,
    );
    await assertRegularFile(path);
  }
  return folder(names, weightMap, indexName);
}
