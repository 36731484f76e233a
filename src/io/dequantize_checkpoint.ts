/**
 * {@linkcode dequantizeCheckpoint}: a quantized checkpoint on disk back to a
 * plain float one.
 *
 * @module
 */

import { memberName } from "../member_name.ts";
import { DEQUANTIZED_BY_KEY } from "./_replace_check.ts";
import { TINYQ_VERSION } from "./formats/tinyq.ts";
import { type FloatDType, isFloatDType } from "../dtype.ts";
import { Tensor } from "../tensor.ts";
import { Checkpoint } from "./checkpoint.ts";
import { CheckpointError } from "./checkpoint_error.ts";
import { type InputGroup, writeOutput } from "./_output_dir.ts";
import {
  type CheckpointProgress,
  progressHooks,
  type TensorEvent,
} from "./_progress.ts";
import {
  copyUnit,
  jobInput,
  outputConfig,
  shardMetadata,
} from "./_carry_over.ts";

export type { CheckpointProgress, TensorEvent } from "./_progress.ts";

/** Options of {@linkcode dequantizeCheckpoint}. */
export interface DequantizeCheckpointOptions {
  /**
   * Dtype of the output (default: the restored weights in the original
   * dtype, else f32, and every other tensor as it is). Given, every float
   * tensor is converted to it and `config.json`'s `torch_dtype` says so.
   */
  dtype?: FloatDType;
  /** Replace an existing output. */
  force?: boolean;
  /** Split the output into shards of at most this many bytes. */
  maxShardSize?: number;
  /** Called as bytes are processed. */
  onProgress?: (p: CheckpointProgress) => void;
  /** Called as each tensor is finished. */
  onTensor?: (e: TensorEvent) => void;
}

/** What {@linkcode dequantizeCheckpoint} did. */
export interface DequantizeResult {
  /** The input path. */
  input: string;
  /** The output path. */
  output: string;
  /** Dtype of the restored weights. */
  dtype: FloatDType;
  /** Layers restored to float. */
  dequantized: string[];
  /** Other float tensors converted to `dtype` (an explicit `dtype` converts every one). */
  converted: number;
  /** Output shard names. */
  shards: string[];
  /** Sum of the input tensors' bytes. */
  inputBytes: number;
  /** Sum of the output tensors' bytes. */
  outputBytes: number;
  /** Wall time in seconds. */
  seconds: number;
}

const TORCH_DTYPE: Readonly<Record<FloatDType, string>> = {
  f32: "float32",
  f16: "float16",
  bf16: "bfloat16",
};

/** `config` saying its weights are `dtype` (`torch_dtype`, and transformers 5's `dtype`). */
function withTorchDtype(
  config: Record<string, unknown>,
  dtype: FloatDType,
): Record<string, unknown> {
  const c = { ...config, torch_dtype: TORCH_DTYPE[dtype] };
  if ("dtype" in c) c.dtype = TORCH_DTYPE[dtype];
  return c;
}

function toDtypeBytes(w: Float32Array, dtype: FloatDType): Uint8Array {
  const t = new Tensor(w, [w.length]).to(dtype);
  return t.bytes();
}

/**
 * Turns a TinyQ-quantized checkpoint back into a plain float one that any
 * safetensors loader reads: each `P.int8_weights`/`P.scales` pair becomes
 * `P.weight` = q · scale (GPT-2's Conv1D weights back in [in, out]), the
 * `quantization` metadata and `config.json`'s `quantization_config` go.
 *
 * @example
 * ```ts
 * import { Checkpoint, dequantizeCheckpoint, makeDemoCheckpoint, quantizeCheckpoint } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * await makeDemoCheckpoint(`${dir}/model`, { layers: 1, hidden: 16 });
 * await quantizeCheckpoint(`${dir}/model`, `${dir}/q`);
 * await dequantizeCheckpoint(`${dir}/q`, `${dir}/back`, { dtype: "f32" });
 * using back = await Checkpoint.open(`${dir}/back`);
 * assert.equal(back.quantization, null);
 * assert.equal(back.entry("model.layers.0.mlp.up_proj.weight")?.info.dtype, "f32");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function dequantizeCheckpoint(
  input: string,
  output: string,
  options: DequantizeCheckpointOptions = {},
): Promise<DequantizeResult> {
  const t0 = performance.now();
  const ckpt = await Checkpoint.open(input);
  try {
    const q = ckpt.quantization;
    const format = ckpt.format;
    if (!q || !format) {
      throw new CheckpointError(
        input,
        "is not a TinyQ-quantized checkpoint (no quantization metadata); nothing to dequantize",
      );
    }
    const recorded = q.weightDtype && isFloatDType(q.weightDtype)
      ? q.weightDtype
      : "f32";
    const dtype = options.dtype ?? recorded;
    const transposed = new Set(q.transposed);
    const stored = new Map<string, string>();
    // The tensor each layer's float weight takes the place of: the first of
    // its stored tensors the checkpoint holds (int8_weights, weight_packed,
    // weight._data).
    const anchors = new Map<string, string>();
    for (const p of q.modules) {
      for (const n of format.storedNames(p)) stored.set(n, p);
      const first = format.storedNames(p).find((n) => ckpt.entry(n));
      if (first === undefined) {
        throw new CheckpointError(
          input,
          `the quantization metadata lists "${p}", but there is no ${
            format.storedNames(p)[0]
          }`,
        );
      }
      if (!ckpt.quantizedShape(p)) {
        await ckpt.dequantizedWeight(p); // throws, naming what is wrong
        throw new CheckpointError(input, `cannot tell the shape of "${p}"`);
      }
      anchors.set(p, first);
    }
    const groups: InputGroup[] = ckpt.shardNames.map((shard) => ({
      name: shard,
      units: [],
      // Marked, so that `--force` knows this output for TinyQ's own.
      metadata: shardMetadata(ckpt.file(shard), {
        [DEQUANTIZED_BY_KEY]: `tinyq ${TINYQ_VERSION}`,
      }),
    }));
    const groupOf = new Map(groups.map((g) => [g.name, g]));
    let inputBytes = 0;
    const convertedNames = new Set<string>();
    for (const e of ckpt.entries) {
      inputBytes += e.info.byteLength;
      const path = stored.get(e.name);
      const g = groupOf.get(e.shard)!;
      if (path === undefined) {
        // An explicit --dtype converts every float tensor, not only the
        // restored Linear weights: the output is one dtype throughout.
        if (
          options.dtype && isFloatDType(e.info.dtype) &&
          e.info.dtype !== dtype
        ) {
          convertedNames.add(e.name);
          g.units.push({
            kind: "produce",
            label: e.name,
            specs: [{ name: e.name, dtype, shape: e.info.shape }],
            produce: async () => [(await ckpt.read(e.name)).to(dtype).bytes()],
          });
        } else g.units.push(copyUnit(ckpt, e));
        continue;
      }
      if (e.name !== anchors.get(path)) continue;
      const [out, inF] = ckpt.quantizedShape(path)!;
      const t = transposed.has(path);
      g.units.push({
        kind: "produce",
        label: e.name,
        specs: [{
          name: memberName(path, "weight"),
          dtype,
          shape: t ? [inF, out] : [out, inF],
        }],
        produce: async () => {
          const w = await ckpt.dequantizedWeight(path);
          if (!t) return [toDtypeBytes(w, dtype)];
          const back = new Float32Array(w.length);
          for (let r = 0; r < out; r++) {
            for (let c = 0; c < inF; c++) back[c * out + r] = w[r * inF + c]!;
          }
          return [toDtypeBytes(back, dtype)];
        },
      });
    }
    const hooks = progressHooks(
      ckpt,
      groups,
      q.modules.length,
      options,
      (u) =>
        u.kind === "produce" && !convertedNames.has(u.label)
          ? "dequantized"
          : "kept",
    );
    const report = await writeOutput({
      dest: output,
      force: options.force ?? false,
      ...jobInput(ckpt, Object.keys(format.extraFiles(q))),
      groups,
      maxShardSize: options.maxShardSize,
      config: outputConfig(
        ckpt,
        null,
        options.dtype ? (c) => withTorchDtype(c, dtype) : undefined,
      ),
      extraFiles: {},
      format,
      hooks,
    });
    return {
      input,
      output,
      dtype,
      dequantized: [...q.modules],
      converted: convertedNames.size,
      shards: report.shards,
      inputBytes,
      outputBytes: report.tensorBytes,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    ckpt.close();
  }
}
