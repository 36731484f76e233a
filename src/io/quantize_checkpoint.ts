/**
 * {@linkcode quantizeCheckpoint}: a float checkpoint on disk to a quantized
 * one, streamed tensor block by tensor block.
 *
 * @module
 */

import { memberName } from "../member_name.ts";
import type { FloatDType } from "../dtype.ts";
import { numel } from "../tensor.ts";
import { excludeMatcher } from "../quant/replace.ts";
import type {
  CheckpointFormat,
  FormatWarning,
  WeightScheme,
} from "./formats/format.ts";
import { tinyqFormat } from "./formats/tinyq.ts";
import { Checkpoint } from "./checkpoint.ts";
import { formatLayer } from "./_checkpoint_layers.ts";
import { type QuantMethod, weightSchemeOf } from "../quant/schemes.ts";
import { CheckpointError } from "./checkpoint_error.ts";
import { splitByGroupSize } from "./group_check.ts";
import { settleFusedGroups } from "./_fused_groups.ts";
import { specBytes } from "./formats/format.ts";
import { type InputGroup, writeOutput } from "./_output_dir.ts";
import {
  type CheckpointProgress,
  progressHooks,
  type TensorEvent,
} from "./_progress.ts";
import {
  checkFormatScheme,
  quantizationSummary,
} from "./quantization_summary.ts";
import {
  copyUnit,
  jobInput,
  outputConfig,
  shardMetadata,
  sourceOf,
  weightOwner,
} from "./_carry_over.ts";

export type { CheckpointProgress, TensorEvent } from "./_progress.ts";
// What a caller of the checkpoint writers needs around them: sizes for
// `maxShardSize` and, on an interrupt, the removal of a partial output.
export { removeActiveTemps } from "./atomic.ts";
export { parseSize } from "./_sharding.ts";

/** Options of {@linkcode quantizeCheckpoint}. */
export interface QuantizeCheckpointOptions {
  /**
   * `w8a16` (default), `w8a32` or `w8a8` (the same int8 tensors, a different
   * recorded method), or `w4a16` (group-wise 4-bit weights).
   */
  method?: QuantMethod;
  /** Zero points: per row (int8 methods) or per group (w4a16). Default false. */
  asymmetric?: boolean;
  /** Inputs per 4-bit group, w4a16 only: 32, 64 or 128 (default 128). */
  groupSize?: number;
  /** Linear layers to leave in float: child names or dotted-path globs. */
  exclude?: readonly string[];
  /** Split the output into shards of at most this many bytes (default: the input's plan). */
  maxShardSize?: number;
  /** Replace an existing output. */
  force?: boolean;
  /** The output format (default TinyQ's own). */
  format?: CheckpointFormat;
  /** Called as bytes are processed. */
  onProgress?: (p: CheckpointProgress) => void;
  /** Called as each tensor is finished. */
  onTensor?: (e: TensorEvent) => void;
  /** Plan only: fill the result (layers, sizes, shard and file names, warnings) and write nothing. */
  dryRun?: boolean;
  /**
   * compressed-tensors: write a fused group (q/k/v_proj, gate/up_proj) that
   * `exclude` leaves split, although vLLM refuses it. Default false: an
   * exact name that splits a group is an error, a glob extends to the group.
   */
  forceMixed?: boolean;
}

/** A Linear layer the output format keeps in float. */
export interface KeptFloat {
  /** Dotted module path. */
  readonly path: string;
  /** Why it stays in float. */
  readonly reason: string;
  /** Who decided: the output format (default), or a 4-bit group size that does not divide its inputs. */
  readonly cause?: "format" | "group-size";
}

/** What {@linkcode quantizeCheckpoint} (or {@linkcode saveModule}) did. */
export interface QuantizeResult {
  /** The input path. */
  input: string;
  /** The output path. */
  output: string;
  /** The method recorded. */
  method: QuantMethod;
  /** How the weights are stored: bits, group size, symmetric. */
  scheme: WeightScheme;
  /** The output format. */
  format: string;
  /** The Linear table used, or null (generic rule). */
  family: string | null;
  /** Why that table. */
  familySource: string;
  /** Dotted paths of the quantized Linear layers. */
  quantized: string[];
  /** Linear layers left in float: by `exclude`, or because the format cannot hold them quantized. */
  excluded: string[];
  /** The layers of `excluded` the format keeps in float, with why. */
  keptFloat: KeptFloat[];
  /** What may stop the engines that load the format from serving the output. */
  warnings: FormatWarning[];
  /** Decisions taken for the user, one line each (a fused group excluded whole). */
  notes?: string[];
  /** Input tensors passed through unchanged (excluded weights and biases included). */
  kept: number;
  /** Output shard names. */
  shards: string[];
  /** Other files copied from the input folder. */
  copied: string[];
  /** Files of the input folder not copied, with why. */
  skipped: string[];
  /** Sum of the input tensors' bytes. */
  inputBytes: number;
  /** Sum of the output tensors' bytes. */
  outputBytes: number;
  /** Elements of all input tensors (for bits per weight). */
  parameters: number;
  /** Elements of the quantized Linear weights. */
  quantizedParameters: number;
  /** Bytes of the quantized Linear weights before. */
  quantizedBytesBefore: number;
  /** Bytes of their int8 weights and scales after. */
  quantizedBytesAfter: number;
  /** Wall time in seconds. */
  seconds: number;
  /** Whether this was a dry run (nothing written). */
  dryRun?: boolean;
  /** Files written beside the shards (index, config.json, the format's files); dry runs only. */
  files?: string[];
  /** Whether the output path exists already (a dry run reports it; the real run needs `force`). */
  outputExists?: boolean;
}

/**
 * Quantizes the checkpoint at `input` into a new checkpoint at `output`,
 * streaming: each Linear weight is read, quantized and written in blocks of
 * rows, every other tensor is copied byte for byte, so memory stays flat
 * whatever the checkpoint's size. The output keeps the input's shard plan
 * (or `maxShardSize`), gets a fresh index, `config.json` with a
 * `quantization_config` block, and the input folder's other files. It
 * appears only when complete; an existing output is refused unless `force`.
 *
 * @example
 * ```ts
 * import { Checkpoint, makeDemoCheckpoint, quantizeCheckpoint } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * await makeDemoCheckpoint(`${dir}/model`, { layers: 1, hidden: 16 });
 * const result = await quantizeCheckpoint(`${dir}/model`, `${dir}/q`, { exclude: ["lm_head"] });
 * assert.deepEqual(result.excluded, ["lm_head"]);
 * using q = await Checkpoint.open(`${dir}/q`);
 * assert.equal(q.quantization?.method, "w8a16");
 * assert.equal(q.entry("model.layers.0.mlp.up_proj.int8_weights")?.info.dtype, "i8");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function quantizeCheckpoint(
  input: string,
  output: string,
  options: QuantizeCheckpointOptions = {},
): Promise<QuantizeResult> {
  const t0 = performance.now();
  const method = options.method ?? "w8a16";
  const format = options.format ?? tinyqFormat;
  const scheme = weightSchemeOf(method, options);
  checkFormatScheme(format, method, scheme);
  const ckpt = await Checkpoint.open(input);
  try {
    const why = ckpt.alreadyQuantized();
    if (why) {
      throw new CheckpointError(
        input,
        `${why}; refusing to quantize twice (quantize the original checkpoint)`,
      );
    }
    const linears = new Map(ckpt.linears().map((l) => [l.path, l]));
    const notes: string[] = [];
    let exclude = [...(options.exclude ?? [])];
    if (format.name === "compressed-tensors") {
      const settled = settleFusedGroups(
        input,
        [...linears.keys()],
        exclude,
        options.forceMixed ?? false,
      );
      exclude = [...exclude, ...settled.extra];
      notes.push(...settled.notes);
    }
    const isExcluded = excludeMatcher(exclude);
    const quantized: string[] = [];
    const excluded: string[] = [];
    const keptFloat: KeptFloat[] = [];
    for (const e of ckpt.entries) {
      const path = weightOwner(e.name);
      if (path === null || !linears.has(path)) continue;
      const why = isExcluded(path)
        ? null
        : format.keepFloat?.(formatLayer(linears.get(path)!)) ?? null;
      if (why) keptFloat.push({ path, reason: why });
      (isExcluded(path) || why ? excluded : quantized).push(path);
    }
    if (scheme.groupSize !== null) {
      // Before anything is written: a layer 4-bit groups cannot split stays
      // in float, named with why.
      const { misfits } = splitByGroupSize(
        input,
        quantized.map((p) => ({
          path: p,
          inFeatures: linears.get(p)!.inFeatures!,
        })),
        scheme.groupSize,
      );
      const moved = new Set(misfits.map((m) => m.path));
      for (const m of misfits) {
        keptFloat.push({ path: m.path, reason: m.reason, cause: "group-size" });
      }
      const order = new Map(ckpt.linears().map((l, i) => [l.path, i]));
      excluded.push(...quantized.filter((p) => moved.has(p)));
      excluded.sort((a, b) => order.get(a)! - order.get(b)!);
      quantized.splice(
        0,
        quantized.length,
        ...quantized.filter((p) => !moved.has(p)),
      );
    }
    const summary = quantizationSummary(
      method,
      scheme,
      linears,
      quantized,
      excluded,
    );
    const warnings = format.warnings?.(
      summary,
      quantized.map((p) => formatLayer(linears.get(p)!)),
    ) ?? [];
    const qset = new Set(quantized);
    const fileMeta = format.fileMetadata(summary);
    const groups: InputGroup[] = ckpt.shardNames.map((shard) => ({
      name: shard,
      units: [],
      metadata: shardMetadata(ckpt.file(shard), fileMeta),
    }));
    const groupOf = new Map(groups.map((g) => [g.name, g]));
    const res = {
      parameters: 0,
      inputBytes: 0,
      quantizedParameters: 0,
      quantizedBytesBefore: 0,
      quantizedBytesAfter: 0,
      kept: 0,
    };
    for (const e of ckpt.entries) {
      res.parameters += numel(e.info.shape);
      res.inputBytes += e.info.byteLength;
      const path = weightOwner(e.name);
      const g = groupOf.get(e.shard)!;
      if (path !== null && qset.has(path)) {
        const l = linears.get(path)!;
        const specs = format.linearTensors(
          path,
          l.outFeatures!,
          l.inFeatures!,
          l.dtype!,
          scheme,
        );
        g.units.push({
          kind: "quantize",
          path,
          specs,
          src: sourceOf(ckpt, e),
          transposed: l.transposed,
          outFeatures: l.outFeatures!,
          inFeatures: l.inFeatures!,
          dtype: l.dtype as FloatDType,
          scheme,
        });
        res.quantizedParameters += numel(e.info.shape);
        res.quantizedBytesBefore += e.info.byteLength;
        res.quantizedBytesAfter += specs.reduce((s, t) => s + specBytes(t), 0);
      } else {
        g.units.push(copyUnit(ckpt, e));
        res.kept++;
      }
    }
    const excludedWeights = new Set(
      excluded.map((p) => memberName(p, "weight")),
    );
    const hooks = progressHooks(
      ckpt,
      groups,
      quantized.length,
      options,
      (u) =>
        u.kind === "quantize"
          ? "quantized"
          : u.kind === "copy" && excludedWeights.has(u.spec.name)
          ? "excluded"
          : "kept",
    );
    const block = format.configBlock(summary);
    const report = await writeOutput({
      dest: output,
      force: options.force ?? false,
      ...jobInput(ckpt),
      groups,
      maxShardSize: options.maxShardSize,
      config: outputConfig(
        ckpt,
        block,
        (c) => format.updateConfig?.(c, summary) ?? c,
      ),
      extraFiles: ckpt.kind === "folder" ? format.extraFiles(summary) : {},
      format,
      hooks,
      dryRun: options.dryRun ?? false,
    });
    return {
      input,
      output,
      method,
      scheme,
      format: format.name,
      family: ckpt.family,
      familySource: ckpt.familySource,
      quantized,
      excluded,
      keptFloat,
      warnings,
      notes,
      kept: res.kept,
      shards: report.shards,
      copied: report.copied,
      skipped: report.skipped,
      inputBytes: res.inputBytes,
      outputBytes: report.tensorBytes,
      parameters: res.parameters,
      quantizedParameters: res.quantizedParameters,
      quantizedBytesBefore: res.quantizedBytesBefore,
      quantizedBytesAfter: res.quantizedBytesAfter,
      seconds: (performance.now() - t0) / 1000,
      ...(options.dryRun
        ? {
          dryRun: true,
          files: report.files,
          outputExists: await Deno.lstat(output).then(() => true, () => false),
        }
        : {}),
    };
  } finally {
    ckpt.close();
  }
}
