/**
 * {@linkcode CausalLM}: a loaded decoder model — config, tokenizer, Module
 * tree and the engine that runs it.
 *
 * @module
 */

import type { Checkpoint } from "../io/checkpoint.ts";
import type { ModelConfig } from "./config.ts";
import type { DecoderModel } from "./decoder_model.ts";
import type { Engine } from "./engine.ts";
import type { Tokenizer } from "./tokenizer.ts";
import {
  generate,
  type GenerateOptions,
  type Generation,
  type Prompt,
} from "./generate.ts";
import {
  perplexity,
  type PerplexityOptions,
  type PerplexityResult,
} from "./perplexity.ts";

/**
 * A causal language model ready to run. Make one with `loadCausalLM`.
 * `model` is the Module tree (TinyQ's flow works on it:
 * `await new Quantizer(lm.model).quantize("w8a16", ["lm_head"])` swaps its
 * layers, and the engine runs the quantized ones from the next step on).
 *
 * @example Logits of a prompt, before and after quantizing
 * ```ts
 * import { loadCausalLM, Quantizer } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const lm = await loadCausalLM("models/tinystories-656k");
 * const ids = lm.tokenizer.encode("Once upon a time");
 * const float = await lm.logits(ids);
 * assert.equal(float.length, ids.length * lm.config.vocabSize);
 * await new Quantizer(lm.model).quantize("w8a16", ["lm_head"]);
 * assert.match(String(lm.model), /\(q_proj\): W8A16LinearLayer\(in_features=128, out_features=128, bias=False\)/);
 * const int8 = await lm.logits(ids);
 * assert.ok(int8.every((x, i) => Math.abs(x - float[i]!) < 0.5));
 * lm.dispose();
 * ```
 */
export class CausalLM {
  /** The normalised config. */
  readonly config: ModelConfig;
  /** The Module tree (HF names; Linear or quantized layers at every matmul). */
  readonly model: DecoderModel;
  /** The tokenizer (its `available` is false when the folder has none). */
  readonly tokenizer: Tokenizer;
  /** The engine that runs the model (one KV cache). */
  readonly engine: Engine;
  /** Positions the engine's cache holds. */
  readonly contextLength: number;
  readonly #checkpoint: Checkpoint | null;

  /** Wraps loaded parts; `checkpoint` (closed by dispose) backs lazy tensors. */
  constructor(parts: {
    config: ModelConfig;
    model: DecoderModel;
    tokenizer: Tokenizer;
    engine: Engine;
    contextLength: number;
    checkpoint?: Checkpoint | null;
  }) {
    this.config = parts.config;
    this.model = parts.model;
    this.tokenizer = parts.tokenizer;
    this.engine = parts.engine;
    this.contextLength = parts.contextLength;
    this.#checkpoint = parts.checkpoint ?? null;
  }

  /** Vocabulary size (logits per position). */
  get vocabSize(): number {
    return this.config.vocabSize;
  }

  /** End-of-sequence ids from config.json. */
  get eosIds(): readonly number[] {
    return this.config.eosTokenIds;
  }

  /**
   * Logits of `ids` from position 0 with a fresh cache: f32, row-major
   * [ids.length, vocab]. It uses (and empties) the engine's cache.
   */
  async logits(ids: readonly number[]): Promise<Float32Array> {
    this.engine.reset();
    try {
      return await this.engine.step(ids, 0, "all");
    } finally {
      this.engine.reset();
    }
  }

  /**
   * Generates tokens after `prompt` (text, ids, or `{ messages }` for the
   * chat template): an async iterable of `{ id, text }`, with the figures in
   * `.stats` once it ends. Sampling defaults to temperature 0.8, top-k 40,
   * top-p 0.95; `temperature: 0` is greedy. Stops at EOS or after
   * `maxNewTokens` (default 64). See `generate()` in `generate.ts`.
   *
   * @example Greedy text from TinyStories-656K
   * ```ts
   * import { loadCausalLM } from "@tinyq/tinyq";
   * import assert from "node:assert/strict";
   * const lm = await loadCausalLM("models/tinystories-656k");
   * let text = "";
   * for await (const t of lm.generate("Once upon a time", { temperature: 0, maxNewTokens: 8 })) {
   *   text += t.text;
   * }
   * assert.match(text, /^, a little girl named Lily/);
   * lm.dispose();
   * ```
   */
  generate(prompt: Prompt, options: GenerateOptions = {}): Generation {
    return generate(this, prompt, options);
  }

  /**
   * Perplexity of `text` (tokenized with BOS as the tokenizer adds it) or of
   * token ids: exp(mean NLL of every predicted token) in windows of `ctx`
   * tokens every `stride` (HF's sliding-window recipe). See `perplexity.ts`.
   *
   * @example
   * ```ts
   * import { loadCausalLM } from "@tinyq/tinyq";
   * import assert from "node:assert/strict";
   * const lm = await loadCausalLM("models/tinystories-656k");
   * const r = await lm.perplexity("Once upon a time, there was a little girl named Lily.");
   * assert.ok(r.ppl > 1 && r.ppl < 100);
   * lm.dispose();
   * ```
   */
  perplexity(
    text: string | readonly number[],
    options: PerplexityOptions = {},
  ): Promise<PerplexityResult> {
    const ids = typeof text === "string" ? this.tokenizer.encode(text) : text;
    return perplexity(
      (x) => this.logits(x),
      ids,
      this.vocabSize,
      this.contextLength,
      options,
    );
  }

  /** Frees the engine, the layers' backend buffers and the checkpoint's files. */
  dispose(): void {
    this.engine.dispose();
    this.model.dispose();
    this.#checkpoint?.close();
  }

  /** Same as {@linkcode CausalLM.dispose} (for `using`). */
  [Symbol.dispose](): void {
    this.dispose();
  }
}
