/**
 * TinyQ's `Quantizer`: load a model, quantize it with a named method, save it.
 *
 * @module
 */

import type { Module } from "../module.ts";
import type { QuantizedLinearClass, ReplaceReport } from "./replace.ts";
import { replaceLinearWithTargetAndQuantize } from "./replace.ts";
import { W8A16LinearLayer } from "./w8a16_linear_layer.ts";
import { W8A32LinearLayer } from "./w8a32_linear_layer.ts";

/** The quantization methods {@linkcode Quantizer.quantize} knows. */
export type QuantMethod = "w8a32" | "w8a16";

/** The layer class of each method. */
export const METHODS: Readonly<Record<QuantMethod, QuantizedLinearClass>> = {
  w8a32: W8A32LinearLayer,
  w8a16: W8A16LinearLayer,
};

/**
 * Returns the method named `name`, or throws an error listing the known ones.
 *
 * @example
 * ```ts
 * import { parseQuantMethod } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.equal(parseQuantMethod("W8A16"), "w8a16");
 * assert.throws(() => parseQuantMethod("w2a2"), /known methods: w8a32, w8a16/);
 * ```
 */
export function parseQuantMethod(name: string): QuantMethod {
  const m = name.trim().toLowerCase();
  if (Object.hasOwn(METHODS, m)) return m as QuantMethod;
  throw new RangeError(
    `Unknown quantization method "${name}"; known methods: ${
      Object.keys(METHODS).join(", ")
    }`,
  );
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
  #method: QuantMethod | null = null;

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

  /** The method of the last {@linkcode Quantizer.quantize}, or null. */
  get method(): QuantMethod | null {
    return this.#method;
  }

  /**
   * Replaces the model's Linear layers by quantized ones of `method`, in
   * place, leaving those matched by `exclude` (child names or path globs).
   */
  async quantize(
    method: QuantMethod,
    exclude: readonly string[] = [],
  ): Promise<Module> {
    const target = METHODS[parseQuantMethod(method)];
    this.#report = await replaceLinearWithTargetAndQuantize(
      this.model,
      target,
      exclude,
    );
    this.#method = parseQuantMethod(method);
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

  /** Loads a safetensors checkpoint (folder or file) as a Module tree of lazy tensors. */
  loadModel(_path: string): Promise<Module> {
    return Promise.reject(
      new Error("loadModel() needs the checkpoint reader (issue 3)"),
    );
  }

  /** Saves the quantized model as a safetensors checkpoint folder. */
  saveModel(_path: string): Promise<void> {
    return Promise.reject(
      new Error("saveModel() needs the checkpoint writer (issue 3)"),
    );
  }
}
