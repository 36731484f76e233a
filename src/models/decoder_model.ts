/**
 * {@linkcode DecoderModel}: the root of a causal LM's Module tree, with
 * typed handles on its parts (embeddings, blocks, final norm, head) for the
 * engines. The tree itself carries the checkpoint's names.
 *
 * @module
 */

import { Module } from "../module.ts";
import type { ModelConfig } from "./config.ts";
import type { DecoderLayer } from "./decoder.ts";
import type { Embedding } from "./embedding.ts";
import { isMatmulLayer, type MatmulLayer } from "./linear_call.ts";
import type { Norm } from "./norms.ts";
import type { RotaryEmbedding } from "./rope.ts";

/** The typed parts of a {@linkcode DecoderModel}. */
export interface DecoderModelParts {
  /** Token embedding. */
  readonly embedTokens: Embedding;
  /** Learned position embedding (GPT-2, OPT), or null. */
  readonly embedPositions: Embedding | null;
  /** Path of OPT's `project_in` (embedding width → hidden), or null. */
  readonly projectIn: string | null;
  /** The blocks, in order. */
  readonly layers: readonly DecoderLayer[];
  /** Norm after the last block, or null. */
  readonly finalNorm: Norm | null;
  /** Path of OPT's `project_out` (hidden → embedding width), or null. */
  readonly projectOut: string | null;
  /** Path of the LM head (a Linear, a quantized layer or a `TiedLMHead`). */
  readonly lmHead: string;
  /** Rotary embedding shared by the blocks, or null. */
  readonly rope: RotaryEmbedding | null;
}

/**
 * A causal LM as a Module tree (`LlamaForCausalLM`, `GPT2LMHeadModel`, …):
 * `namedTensors()` yields the checkpoint's tensor names, every matmul is a
 * `Linear` or a quantized layer, and `String(model)` prints it as PyTorch
 * does. Built by `loadCausalLM`.
 *
 * @example Walk the parts of a loaded model
 * ```ts
 * import { loadCausalLM } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const lm = await loadCausalLM("models/tinystories-656k");
 * assert.equal(lm.model.typeName(), "LlamaForCausalLM");
 * assert.equal(lm.model.parts.layers.length, 2);
 * assert.equal(lm.model.matmul("model.layers.0.mlp.up_proj").outFeatures, 384);
 * lm.dispose();
 * ```
 */
export class DecoderModel extends Module {
  /** The normalised config. */
  readonly config: ModelConfig;
  /** Typed handles on the parts. */
  readonly parts: DecoderModelParts;
  readonly #name: string;

  /** Wraps parts that the caller has already placed in the tree under this root. */
  constructor(config: ModelConfig, parts: DecoderModelParts, name: string) {
    super();
    this.config = config;
    this.parts = parts;
    this.#name = name;
  }

  /**
   * The matmul layer at `path` (`"lm_head"`), looked up now: a `Quantizer`
   * may have swapped it since the model was built.
   */
  matmul(path: string): MatmulLayer {
    const m = this.getModule(path);
    if (!isMatmulLayer(m)) {
      throw new Error(`${path} is not a Linear or quantized layer`);
    }
    return m;
  }

  /** The class name (`LlamaForCausalLM`). */
  override typeName(): string {
    return this.#name;
  }
}
