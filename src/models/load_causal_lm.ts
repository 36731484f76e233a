/**
 * {@linkcode loadCausalLM}: a model folder → a runnable {@linkcode CausalLM}.
 *
 * @module
 */

import { join } from "node:path";
import { Checkpoint } from "../io/checkpoint.ts";
import { parseQuantMethod } from "../quant/schemes.ts";
import { Quantizer } from "../quantizer.ts";
import { CausalLM } from "./causal_lm.ts";
import { ModelConfigError, parseModelConfig } from "./config.ts";
import { defaultContextLength } from "./cpu_engine.ts";
import {
  createEngine,
  type EngineBackend,
  engineRunsOnCpu,
} from "./engines.ts";
import { CpuBackend } from "../backend/cpu.ts";
import { buildDecoderModel } from "./families.ts";
import { Tokenizer } from "./tokenizer.ts";

/** Options of {@linkcode loadCausalLM}. */
export interface LoadCausalLMOptions {
  /** Quantize a float checkpoint at load, layer by layer (`w8a32`, `w8a16`, `w8a8`, `w4a16`). */
  method?: string;
  /** Module names or path globs to keep in float when quantizing (as for `Quantizer.quantize`). */
  exclude?: readonly string[];
  /** Inputs per 4-bit group (w4a16 only; default 128). */
  groupSize?: number;
  /** Zero points (asymmetric) when quantizing. */
  asymmetric?: boolean;
  /** Which engine runs the model (default `auto`). */
  backend?: EngineBackend;
  /** Positions the KV cache holds (default: the model's, at most 4096). */
  contextLength?: number;
}

/**
 * Loads a Hugging Face model folder (safetensors, float or quantized in
 * any layout TinyQ reads) as a {@linkcode CausalLM}. Weights stay in their
 * stored form; with `method` a float checkpoint is quantized at load, one
 * layer at a time. The folder's files stay open until `dispose()`.
 *
 * @example
 * ```ts
 * import { loadCausalLM } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const lm = await loadCausalLM("models/tinystories-656k", { method: "w8a16" });
 * assert.equal(lm.config.family, "llama");
 * assert.match(String(lm.model), /^LlamaForCausalLM\(/);
 * const logits = await lm.logits([1, 403, 407]);
 * assert.equal(logits.length, 3 * lm.config.vocabSize);
 * lm.dispose();
 * ```
 */
export async function loadCausalLM(
  path: string,
  options: LoadCausalLMOptions = {},
): Promise<CausalLM> {
  const method = options.method === undefined
    ? null
    : parseQuantMethod(options.method);
  const checkpoint = await Checkpoint.open(path);
  try {
    if (checkpoint.config === null) {
      throw new ModelConfigError(
        `${path}: no config.json next to the weights; the runtime needs it to know the architecture`,
      );
    }
    const config = parseModelConfig(
      checkpoint.config,
      join(checkpoint.dir, "config.json"),
    );
    if (method !== null && checkpoint.quantization) {
      throw new Error(
        `${path} is already quantized (${checkpoint.quantization.method}); load it without a method`,
      );
    }
    const backend = options.backend ?? "auto";
    // On the CPU engine, int8 layers are read straight into the kernels'
    // shared memory: one copy of each weight, not the file's and the pool's.
    const cpu = checkpoint.quantization && await engineRunsOnCpu(backend)
      ? new CpuBackend("loadCausalLM")
      : null;
    const raw = await checkpoint.toModule(
      cpu
        ? { int8Arrays: (n, k, asym) => cpu.allocInt8Weight(n, k, asym) }
        : {},
    );
    const model = buildDecoderModel(config, raw, path);
    if (method !== null) {
      await new Quantizer(model).quantize(method, options.exclude ?? [], {
        ...(options.groupSize !== undefined
          ? { groupSize: options.groupSize }
          : {}),
        asymmetric: options.asymmetric ?? false,
      });
    }
    const contextLength = options.contextLength ??
      defaultContextLength(model);
    const engine = await createEngine(backend, model, {
      contextLength,
    });
    return new CausalLM({
      config,
      model,
      tokenizer: await Tokenizer.load(checkpoint.dir),
      engine,
      contextLength,
      checkpoint,
    });
  } catch (e) {
    checkpoint.close();
    throw e;
  }
}
