/**
 * Progress of a checkpoint write: the events {@linkcode CheckpointProgress}
 * and {@linkcode TensorEvent}, and the emitter hooks that produce them.
 *
 * @module
 */

import type { DType } from "../dtype.ts";
import type { Checkpoint } from "./checkpoint.ts";
import { type EmitHooks, type Unit, unitSpecs } from "./_shard_writer.ts";
import { specBytes } from "./formats/format.ts";
import type { InputGroup } from "./_output_dir.ts";

/** One line of progress. */
export interface CheckpointProgress {
  /** Input bytes processed so far. */
  readonly bytesDone: number;
  /** Input bytes in all. */
  readonly bytesTotal: number;
  /** Tensors (units) finished so far. */
  readonly tensorsDone: number;
  /** Tensors (units) in all. */
  readonly tensorsTotal: number;
  /** Linear layers converted so far. */
  readonly layersDone: number;
  /** Linear layers to convert in all. */
  readonly layersTotal: number;
}

/** One finished output unit (for a per-tensor log like llama.cpp's). */
export interface TensorEvent {
  /** 1-based position among all units. */
  readonly index: number;
  /** Units in all. */
  readonly total: number;
  /** Input tensor name (for a converted Linear: its weight). */
  readonly name: string;
  /** `quantized`, `dequantized`, `excluded` (a Linear left in float) or `kept`. */
  readonly action: "quantized" | "dequantized" | "excluded" | "kept";
  /** Input dtype. */
  readonly dtype: DType;
  /** Input shape as stored. */
  readonly shape: readonly number[];
  /** Input bytes. */
  readonly bytesIn: number;
  /** Output bytes. */
  readonly bytesOut: number;
}

/** The callbacks of a checkpoint write. */
export interface ProgressCallbacks {
  /** Called as bytes are processed. */
  onProgress?: (p: CheckpointProgress) => void;
  /** Called as each tensor is finished. */
  onTensor?: (e: TensorEvent) => void;
}

/**
 * The emitter hooks that turn the units of `groups` being written into
 * `callbacks`; `action` names what became of a unit, and `layersTotal`
 * counts the units that convert a Linear.
 */
export function progressHooks(
  ckpt: Checkpoint,
  groups: readonly InputGroup[],
  layersTotal: number,
  callbacks: ProgressCallbacks,
  action: (u: Unit) => TensorEvent["action"],
): EmitHooks {
  const all = groups.flatMap((g) => g.units);
  const bytesTotal = all.reduce(
    (s, u) => s + (u.kind === "produce" ? 0 : u.src.info.byteLength),
    0,
  );
  let bytesDone = 0;
  let tensorsDone = 0;
  let layersDone = 0;
  const report = () =>
    callbacks.onProgress?.({
      bytesDone,
      bytesTotal,
      tensorsDone,
      tensorsTotal: all.length,
      layersDone,
      layersTotal,
    });
  return {
    onBytes(n: number) {
      bytesDone += n;
      report();
    },
    onUnit(u: Unit) {
      tensorsDone++;
      const a = action(u);
      if (a === "quantized" || a === "dequantized") layersDone++;
      if (callbacks.onTensor) {
        const src = u.kind === "produce" ? null : u.src.info;
        const specs = unitSpecs(u);
        const name = src?.name ?? (u.kind === "produce" ? u.label : "");
        const e = src ?? ckpt.entry(name)?.info;
        callbacks.onTensor({
          index: tensorsDone,
          total: all.length,
          name,
          action: a,
          dtype: e?.dtype ?? specs[0]!.dtype,
          shape: e?.shape ?? specs[0]!.shape,
          bytesIn: e?.byteLength ?? 0,
          bytesOut: specs.reduce((s, t) => s + specBytes(t), 0),
        });
      }
      report();
    },
  };
}
