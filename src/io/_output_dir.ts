/**
 * Writing a whole output checkpoint: its shards, the index, `config.json`,
 * the format's extra files and the input folder's other files, all under a
 * temporary name that becomes the destination only when complete.
 *
 * @module
 */

import { dirname, join } from "node:path";
import type { CheckpointFormat } from "./formats/format.ts";
import { writeAtomically } from "./atomic.ts";
import { CheckpointError, osReason } from "./checkpoint_error.ts";
import {
  type EmitHooks,
  type Unit,
  unitSpecs,
  writeShard,
} from "./_shard_writer.ts";
import { Readers } from "./_serial_file.ts";
import { specBytes } from "./formats/format.ts";
import {
  fileKind,
  INDEX_NAME,
  insidePath,
  outputShardName,
  SINGLE_NAME,
} from "./_folder.ts";
import { shardName, splitBySize } from "./_sharding.ts";
import { checkReplaceable } from "./_replace_check.ts";
import { FORMATS } from "./formats/registry.ts";

/** Units of one input shard, with that shard's metadata. */
export interface InputGroup {
  /** The input shard's file name (the output keeps it unless re-sharded). */
  readonly name: string;
  /** Output units in input order. */
  readonly units: Unit[];
  /** `__metadata__` of the output shard (format first). */
  readonly metadata: ReadonlyMap<string, string>;
}

/** Everything {@linkcode writeOutput} needs. */
export interface OutputJob {
  /** Destination path as the user gave it. */
  readonly dest: string;
  /** Replace an existing destination. */
  readonly force: boolean;
  /** A folder checkpoint, or a single `.safetensors` file. */
  readonly kind: "folder" | "file";
  /** The input folder whose other files are copied, or null. */
  readonly inputDir: string | null;
  /** Input paths never to write (the checkpoint and its folder). */
  readonly inputs: readonly string[];
  /** Input file names not to copy (shards, index, config). */
  readonly consumed: ReadonlySet<string>;
  /** Whether the input had an index (the output keeps one). */
  readonly indexed: boolean;
  /** Units grouped by input shard. */
  readonly groups: readonly InputGroup[];
  /** Maximum shard size in bytes, or undefined to keep the input's plan. */
  readonly maxShardSize?: number;
  /** The new `config.json`, or null to write none. */
  readonly config: Record<string, unknown> | null;
  /** Extra text files (name → content). */
  readonly extraFiles: Readonly<Record<string, string>>;
  /** The output format. */
  readonly format: CheckpointFormat;
  /** Progress callbacks. */
  readonly hooks?: EmitHooks;
  /** Plan only: report the shards and files, write nothing. */
  readonly dryRun?: boolean;
}

/** What {@linkcode writeOutput} wrote. */
export interface OutputReport {
  /** Shard file names in order. */
  shards: string[];
  /** Sum of the output tensors' bytes. */
  tensorBytes: number;
  /** Other files copied from the input folder (relative paths). */
  copied: string[];
  /** Files of the input folder not copied, with the reason. */
  skipped: string[];
  /** Other files written: index, config.json, the format's extra files (filled by a dry run). */
  files: string[];
}

// Weights in other formats would be unquantized copies next to ours.
const OTHER_WEIGHTS =
  /\.(safetensors|bin|pt|pth|ckpt|gguf|h5|msgpack|onnx)$|^pytorch_model\.bin\.index\.json$|^tf_model\.h5\.index\.json$/;

/** A file or folder of the input to copy into the output. */
interface CopyItem {
  /** Relative path. */
  readonly rel: string;
  readonly folder: boolean;
}

/**
 * Decides, before anything is written, what of the input folder is copied:
 * every file is checked to be a regular file inside the folder and readable
 * (errors name it), so nothing fails after the shards are written.
 */
async function planCopies(
  root: string,
  rel: string,
  consumed: ReadonlySet<string>,
  plan: CopyItem[],
  report: OutputReport,
): Promise<void> {
  const entries: Deno.DirEntry[] = [];
  const here = join(root, rel);
  try {
    for await (const e of Deno.readDir(here)) entries.push(e);
  } catch (e) {
    throw new CheckpointError(here, `cannot list the folder: ${osReason(e)}`);
  }
  entries.sort((a, b) => a.name < b.name ? -1 : 1);
  for (const e of entries) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (consumed.has(r) || (rel === "" && e.name === ".git")) continue;
    if (OTHER_WEIGHTS.test(e.name)) {
      report.skipped.push(`${r} (weights in another file format)`);
      continue;
    }
    const path = join(root, r);
    try {
      await insidePath(root, r, "the file", path);
    } catch (err) {
      report.skipped.push(
        `${r} (${err instanceof CheckpointError ? err.detail : osReason(err)})`,
      );
      continue;
    }
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(path);
    } catch (err) {
      throw new CheckpointError(path, `cannot read: ${osReason(err)}`);
    }
    if (e.isDirectory) {
      plan.push({ rel: r, folder: true });
      await planCopies(root, r, consumed, plan, report);
    } else if (info.isDirectory) {
      report.skipped.push(`${r} (symlinked folder)`);
    } else if (!info.isFile) {
      report.skipped.push(`${r} (${fileKind(info)}, not a regular file)`);
    } else {
      try {
        (await Deno.open(path, { read: true })).close();
      } catch (err) {
        throw new CheckpointError(path, `cannot read: ${osReason(err)}`);
      }
      plan.push({ rel: r, folder: false });
    }
  }
}

async function copyPlanned(
  src: string,
  dst: string,
  plan: readonly CopyItem[],
  report: OutputReport,
): Promise<void> {
  for (const item of plan) {
    if (item.folder) {
      await Deno.mkdir(join(dst, item.rel));
      continue;
    }
    try {
      await Deno.copyFile(join(src, item.rel), join(dst, item.rel));
    } catch (e) {
      throw new CheckpointError(
        join(src, item.rel),
        `cannot copy: ${osReason(e)}`,
      );
    }
    report.copied.push(item.rel);
  }
}

/** Writes the output checkpoint of `job` all or nothing. */
export async function writeOutput(job: OutputJob): Promise<OutputReport> {
  let shards: {
    name: string;
    units: Unit[];
    metadata: ReadonlyMap<string, string>;
  }[];
  if (job.maxShardSize !== undefined) {
    const all = job.groups.flatMap((g) => g.units);
    const size = (u: Unit) =>
      unitSpecs(u).reduce((s, t) => s + specBytes(t), 0);
    const split = splitBySize(all, size, job.maxShardSize);
    const meta = job.groups[0]?.metadata ?? new Map([["format", "pt"]]);
    shards = split.map((units, i) => ({
      name: split.length === 1 ? SINGLE_NAME : shardName(i, split.length),
      units,
      metadata: meta,
    }));
  } else {
    shards = job.groups.map((g) => ({ ...g, name: outputShardName(g.name) }));
  }
  if (job.kind === "file" && shards.length !== 1) {
    throw new CheckpointError(
      job.dest,
      "a single-file checkpoint cannot be split into shards",
    );
  }
  const report: OutputReport = {
    shards: shards.map((s) => s.name),
    tensorBytes: 0,
    copied: [],
    skipped: [],
    files: [],
  };
  const weightMap: [string, string][] = [];
  for (const s of shards) {
    for (const u of s.units) {
      for (const t of unitSpecs(u)) {
        weightMap.push([t.name, s.name]);
        report.tensorBytes += specBytes(t);
      }
    }
  }
  // Before the heavy work: what will be copied, and what the output holds.
  const plan: CopyItem[] = [];
  if (job.inputDir !== null && job.kind === "folder") {
    const consumed = new Set([
      ...job.consumed,
      ...Object.keys(job.extraFiles),
    ]);
    await planCopies(job.inputDir, "", consumed, plan, report);
  }
  const planned = new Set([
    ...report.shards,
    ...(shards.length > 1 || job.indexed ? [INDEX_NAME] : []),
    ...(job.config ? ["config.json"] : []),
    ...Object.keys(job.extraFiles),
    ...plan.filter((p) => !p.folder).map((p) => p.rel),
  ]);
  if (job.dryRun) {
    if (job.kind === "folder" && (shards.length > 1 || job.indexed)) {
      report.files.push(INDEX_NAME);
    }
    if (job.kind === "folder" && job.config) report.files.push("config.json");
    if (job.kind === "folder") {
      report.files.push(...Object.keys(job.extraFiles));
    }
    report.copied.push(...plan.filter((p) => !p.folder).map((p) => p.rel));
    return report;
  }
  const readers = new Readers();
  try {
    return await writeAtomically(
      job.dest,
      {
        force: job.force,
        folder: job.kind === "folder",
        inputs: job.inputs,
        checkReplace: (existing, abs) =>
          checkReplaceable(
            job.dest,
            abs,
            existing,
            job.kind,
            planned,
            FORMATS.flatMap((f) => f.detectFiles ?? []),
          ),
      },
      async (tmp) => {
        for (const s of shards) {
          const path = job.kind === "file" ? tmp : join(tmp, s.name);
          const display = job.kind === "file"
            ? job.dest
            : join(job.dest, s.name);
          if (job.kind === "folder") {
            await Deno.mkdir(dirname(path), { recursive: true });
          }
          await writeShard(
            path,
            display,
            s.units,
            s.metadata,
            job.format,
            readers,
            job.hooks,
          );
        }
        if (job.kind === "file") return report;
        const text = async (name: string, content: string) => {
          try {
            await Deno.writeTextFile(join(tmp, name), content);
          } catch (e) {
            throw new CheckpointError(
              join(job.dest, name),
              `cannot write: ${osReason(e)}`,
            );
          }
        };
        if (shards.length > 1 || job.indexed) {
          weightMap.sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
          const index = {
            metadata: { total_size: report.tensorBytes },
            weight_map: Object.fromEntries(weightMap),
          };
          await text(INDEX_NAME, JSON.stringify(index, null, 2) + "\n");
        }
        if (job.config) {
          await text("config.json", JSON.stringify(job.config, null, 2) + "\n");
        }
        for (const [name, content] of Object.entries(job.extraFiles)) {
          await text(name, content);
        }
        if (job.inputDir !== null) {
          await copyPlanned(job.inputDir, tmp, plan, report);
        }
        return report;
      },
    );
  } finally {
    await readers.close();
  }
}
