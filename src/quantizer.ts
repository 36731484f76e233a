/**
 * TinyQ's `Quantizer`: load a model, quantize it with a named method, save it.
 *
 * @module
 */

import type { Module } from "./module.ts";
import { Checkpoint } from "./io/checkpoint.ts";
import { saveModule } from "./io/save_module.ts";
import type { ReplaceReport } from "./quant/replace.ts";
import {
  replaceLinearWithTargetAndQuantize,
  unmatchedExcludes,
} from "./quant/replace.ts";
import {
  METHODS,
  parseQuantMethod,
  type QuantMethod,
} from "./quant/schemes.ts";
import { DEFAULT_INT4_GROUP_SIZE } from "./quant/int4.ts";

/** Options of {@linkcode Quantizer.quantize}. */
export interface QuantizerOptions {
  /** Zero points: per row (int8 methods) or per group (w4a16). Default false. */
  asymmetric?: boolean;
  /** Inputs per group, w4a16 only: 32, 64 or 128 (default 128). */
  groupSize?: number;
}

/**
 * Loads a model, quantizes its Linear layers and saves the result, with
 * TinyQ's method names in camelCase.
 *
 * @example Quantize an in-memory model
 * ```ts
 * import { Linear, Module, Quantizer, W8A16LinearLayer } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const model = new Module();
 * model.setChild("proj", new Linear(8, 4));
 * const quantizer = new Quantizer(model);
 * await quantizer.quantize("w8a16");
 * assert.ok(quantizer.getQuantizedModel().getChild("proj") instanceof W8A16LinearLayer);
 * ```
 */
export class Quantizer {
  #model: Module | null;
  #quantized: Module | null = null;
  #report: ReplaceReport | null = null;
  #unmatched: readonly string[] = [];
  #method: QuantMethod | null = null;
  #checkpoint: Checkpoint | null = null;

  /** Wraps a model already in memory, or none (then call {@linkcode Quantizer.loadModel}). */
  constructor(model?: Module) {
    this.#model = model ?? null;
  }

  /** The model being quantized (throws when none was given or loaded). */
  get model(): Module {
    if (!this.#model) {
      throw new Error(
        "No model: pass one to new Quantizer() or call loadModel()",
      );
    }
    return this.#model;
  }

  /** What the last {@linkcode Quantizer.quantize} did, or null. */
  get report(): ReplaceReport | null {
    return this.#report;
  }

  /**
   * The `exclude` entries of {@linkcode Quantizer.quantize} that matched no
   * Linear layer (a typo: those layers were quantized), or `[]`.
   */
  get unmatchedExcludes(): readonly string[] {
    return this.#unmatched;
  }

  /** The method of the last {@linkcode Quantizer.quantize}, or null. */
  get method(): QuantMethod | null {
    return this.#method;
  }

  /**
   * Replaces the model's Linear layers by quantized ones of `method`, in
   * place, leaving those matched by `exclude` (child names, path globs, or
   * weight tensor names such as `lm_head.weight`). A model is quantized
   * once: a second call throws (load the model again for another method).
   * `asymmetric` stores zero points; `groupSize` (w4a16 only) sets the
   * inputs per 4-bit group. A layer whose input size the group size does not
   * divide is an error naming its weight, before any layer is replaced.
   *
   * @example W4A16 with groups of 32 and zero points
   * ```ts
   * import { Linear, Module, Quantizer, W4A16LinearLayer } from "@tinyq/tinyq";
   * import assert from "node:assert/strict";
   * const model = new Module();
   * model.setChild("proj", new Linear(64, 8));
   * await new Quantizer(model).quantize("w4a16", [], { groupSize: 32, asymmetric: true });
   * const layer = model.getChild("proj") as W4A16LinearLayer;
   * assert.deepEqual([layer.groupSize, layer.asymmetric], [32, true]);
   * ```
   */
  async quantize(
    method: QuantMethod,
    exclude: readonly string[] = [],
    options: QuantizerOptions = {},
  ): Promise<Module> {
    const m = parseQuantMethod(method);
    if (this.#method !== null) {
      // A second pass would quantize only the layers the first excluded and
      // leave `method` naming one of two schemes: refuse instead.
      throw new Error(
        `The model is already quantized (${this.#method}); load it again to quantize it with ${m}`,
      );
    }
    const { layer, layout } = METHODS[m];
    if (options.groupSize !== undefined && layout.bits !== 4) {
      throw new RangeError(
        `groupSize applies to w4a16 only (4-bit groups); ${m} has one scale per output row`,
      );
    }
    this.#report = await replaceLinearWithTargetAndQuantize(
      this.model,
      layer,
      exclude,
      {
        asymmetric: options.asymmetric ?? false,
        ...(layout.bits === 4
          ? { groupSize: options.groupSize ?? DEFAULT_INT4_GROUP_SIZE }
          : {}),
      },
    );
    this.#unmatched = unmatchedExcludes(exclude, [
      ...this.#report.quantized,
      ...this.#report.excluded,
    ]);
    this.#method = m;
    this.#quantized = this.model;
    return this.#quantized;
  }

  /** The quantized model (throws before {@linkcode Quantizer.quantize}). */
  getQuantizedModel(): Module {
    if (!this.#quantized) {
      throw new Error("The model is not quantized yet: call quantize() first");
    }
    return this.#quantized;
  }

  /**
   * Loads a safetensors checkpoint (a model folder or one file) as a Module
   * tree: `Linear` layers where the model family's table (or the generic
   * rule) says so, each tensor read from disk only when used. The files stay
   * open until {@linkcode Quantizer.close} or the next `loadModel`. The
   * quantized layers are then held in memory (about half the model's bf16
   * size); for checkpoints larger than memory use `quantizeCheckpoint` or
   * `tinyq quantize`, which stream.
   *
   * @example
   * ```ts
   * import { Linear, makeDemoCheckpoint, Quantizer } from "@tinyq/tinyq";
   * import assert from "node:assert/strict";
   * const dir = await Deno.makeTempDir();
   * await makeDemoCheckpoint(`${dir}/model`, { layers: 1, hidden: 16 });
   * const quantizer = new Quantizer();
   * const model = await quantizer.loadModel(`${dir}/model`);
   * assert.ok(model.getModule("model.layers.0.mlp.up_proj") instanceof Linear);
   * await quantizer.quantize("w8a16", ["lm_head"]);
   * await quantizer.saveModel(`${dir}/model-int8`);
   * quantizer.close();
   * await Deno.remove(dir, { recursive: true });
   * ```
   */
  async loadModel(path: string): Promise<Module> {
    const checkpoint = await Checkpoint.open(path);
    let model: Module;
    try {
      model = await checkpoint.toModule();
    } catch (e) {
      checkpoint.close();
      throw e;
    }
    this.close();
    this.#checkpoint = checkpoint;
    this.#model = model;
    this.#quantized = null;
    this.#report = null;
    this.#method = null;
    return model;
  }

  /**
   * Saves the quantized model as a safetensors checkpoint. After
   * {@linkcode Quantizer.loadModel} the output is byte for byte what
   * `tinyq quantize` writes for the same method and exclusions (shard plan,
   * index, config.json, other files); a model built in memory is saved as a
   * folder with one `model.safetensors` (or as that file when `path` ends in
   * `.safetensors`). An existing output is refused unless `force`.
   */
  async saveModel(
    path: string,
    options: { force?: boolean; maxShardSize?: number } = {},
  ): Promise<void> {
    const model = this.getQuantizedModel();
    await saveModule(model, path, {
      method: this.#method!,
      excluded: this.#report?.excluded ?? [],
      source: this.#checkpoint,
      ...options,
    });
  }

  /** Closes the files of a checkpoint opened by {@linkcode Quantizer.loadModel}. */
  close(): void {
    this.#checkpoint?.close();
    this.#checkpoint = null;
  }
}
