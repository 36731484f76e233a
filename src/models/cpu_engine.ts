/**
 * {@linkcode CpuEngine}: the forward pass on the CPU, through the layers'
 * own `forward()` (so `Linear` and every quantized layer run their CPU
 * kernels), f32 activations, and a KV cache of f32 arrays sized to the
 * context once. A prefill of n tokens goes through each layer as one
 * [n, hidden] matrix, so the GEMM kernels do the work.
 *
 * @module
 */

import { DTYPE_SIZE } from "../dtype.ts";
import { Tensor } from "../tensor.ts";
import type { DecoderModel } from "./decoder_model.ts";
import type { Engine, EngineStats, SamplerParams } from "./engine.ts";
import { KVCache } from "./kv_cache.ts";
import { TiedLMHead } from "./lm_head.ts";
import { runLinear } from "./linear_call.ts";
import { sampleToken } from "./sampler.ts";

/** Options every engine takes. */
export interface EngineOptions {
  /** Positions the KV cache holds (default: the model's, at most 4096). */
  contextLength?: number;
  /** Activation dtype of the W8A16 layers (default: f16 for an f16 checkpoint, else bf16). */
  act16?: "f16" | "bf16";
}

/** The context an engine gets by default: the model's, at most 4096 positions. */
export function defaultContextLength(model: DecoderModel): number {
  return Math.min(model.config.maxPositions, 4096);
}

/**
 * Checks a step's arguments against the cache: tokens non-empty, `pos` no
 * further than the positions filled, the end inside the context.
 */
export function checkStep(
  tokens: readonly number[],
  pos: number,
  filled: number,
  contextLength: number,
): void {
  if (tokens.length === 0) {
    throw new RangeError("step() needs at least one token");
  }
  if (!Number.isSafeInteger(pos) || pos < 0 || pos > filled) {
    throw new RangeError(
      `step() at position ${pos}, but the cache holds positions [0, ${filled}): steps must continue it`,
    );
  }
  if (pos + tokens.length > contextLength) {
    throw new RangeError(
      `Positions [${pos}, ${
        pos + tokens.length
      }) do not fit the context of ${contextLength} tokens`,
    );
  }
}

/** Throws when `logits` has a NaN, naming the position. */
export function checkLogits(
  logits: Float32Array,
  vocab: number,
  firstPos: number,
): void {
  for (let i = 0; i < logits.length; i++) {
    if (Number.isNaN(logits[i])) {
      throw new Error(
        `The model produced NaN logits at position ${
          firstPos + Math.floor(i / vocab)
        } (token ${i % vocab}): its weights or activations are not finite`,
      );
    }
  }
}

/**
 * The CPU engine.
 *
 * @example Incremental decoding gives the same logits as one pass
 * ```ts
 * import { loadCausalLM } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const lm = await loadCausalLM("models/tinystories-656k", { backend: "cpu" });
 * const all = await lm.logits([1, 403, 407]);
 * const engine = lm.engine;
 * await engine.step([1, 403], 0, "last");
 * const last = await engine.step([407], 2, "last");
 * const v = lm.config.vocabSize;
 * assert.ok(last.every((x, i) => Math.abs(x - all[2 * v + i]!) < 1e-4));
 * lm.dispose();
 * ```
 */
export class CpuEngine implements Engine {
  /** `"cpu"`. */
  readonly name = "cpu" as const;
  /** The model it runs. */
  readonly model: DecoderModel;
  /** Positions the cache holds. */
  readonly contextLength: number;
  /** Activation dtype of the W8A16 layers. */
  readonly act16: "f16" | "bf16";
  #caches: KVCache[];
  #scores: Float32Array;
  #filled = 0;

  /** Allocates the KV cache for `model`. */
  constructor(model: DecoderModel, options: EngineOptions = {}) {
    const c = model.config;
    this.model = model;
    this.contextLength = options.contextLength ?? defaultContextLength(model);
    this.act16 = options.act16 ?? (c.dtype === "f16" ? "f16" : "bf16");
    this.#caches = model.parts.layers.map(() =>
      new KVCache(this.contextLength, c.numKvHeads * c.headDim)
    );
    this.#scores = new Float32Array(this.contextLength);
    model.parts.rope?.reserve(this.contextLength);
  }

  /** See {@linkcode Engine.step}. */
  async step(
    tokens: readonly number[],
    pos: number,
    rows: "last" | "all",
  ): Promise<Float32Array> {
    checkStep(tokens, pos, this.#filled, this.contextLength);
    const { config: c, parts } = this.model;
    const n = tokens.length;
    this.#filled = pos;
    let x = await this.#embed(tokens, pos);
    for (const [i, layer] of parts.layers.entries()) {
      x = await layer.forward(x, {
        pos,
        cache: this.#caches[i]!,
        rope: parts.rope,
        act16: this.act16,
        scores: this.#scores,
      });
    }
    this.#filled = pos + n;
    if (rows === "last" && n > 1) {
      const h = c.hiddenSize;
      x = new Tensor((x.data as Float32Array).slice((n - 1) * h), [1, h]);
    }
    const m = x.shape[0]!;
    if (parts.finalNorm) await parts.finalNorm.apply(x.data as Float32Array, m);
    if (parts.projectOut) {
      x = await runLinear(this.model.matmul(parts.projectOut), x, this.act16);
    }
    const logits = (await runLinear(
      this.model.matmul(parts.lmHead),
      x,
      this.act16,
    )).data as Float32Array;
    const cap = c.finalSoftcap;
    if (cap !== null) {
      for (let i = 0; i < logits.length; i++) {
        logits[i] = Math.tanh(logits[i]! / cap) * cap;
      }
    }
    checkLogits(logits, c.vocabSize, pos + n - m);
    return logits;
  }

  // Token rows (× the embedding scale), OPT's project_in, learned positions.
  async #embed(tokens: readonly number[], pos: number): Promise<Tensor> {
    const { config: c, parts } = this.model;
    const n = tokens.length;
    const width = parts.embedTokens.embeddingDim;
    const e = new Float32Array(n * width);
    await parts.embedTokens.gather(tokens, e, { scale: c.embeddingScale });
    let x = new Tensor(e, [n, width]);
    if (parts.projectIn) {
      x = await runLinear(this.model.matmul(parts.projectIn), x, this.act16);
    }
    if (parts.embedPositions && c.positions.kind === "learned") {
      const offset = c.positions.offset;
      const ids = Array.from({ length: n }, (_, t) => pos + t + offset);
      await parts.embedPositions.gather(ids, x.data as Float32Array, {
        add: true,
      });
    }
    return x;
  }

  /** See {@linkcode Engine.stepAndSample}. */
  async stepAndSample(
    tokens: readonly number[],
    pos: number,
    sampler: SamplerParams,
    u: number,
  ): Promise<number> {
    return sampleToken(await this.step(tokens, pos, "last"), sampler, u);
  }

  /** See {@linkcode Engine.reset}. */
  reset(): void {
    this.#filled = 0;
  }

  /** Frees the KV cache; the engine cannot step afterwards. */
  dispose(): void {
    this.#caches = [];
    this.#scores = new Float32Array(0);
    this.#filled = 0;
  }

  /** Bytes of weights one decoded token reads: every tensor except the rows of embeddings not used as a head. */
  stats(): EngineStats {
    return { weightBytesPerToken: weightBytesPerToken(this.model) };
  }
}

/**
 * Bytes of weights one decoded token reads: every tensor of the tree,
 * except that an embedding table counts one row (all of it when the LM
 * head is tied to it).
 */
export function weightBytesPerToken(model: DecoderModel): number {
  const { parts } = model;
  const tables = new Set<unknown>([
    parts.embedTokens.weight,
    parts.embedPositions?.weight,
  ]);
  const tied = model.matmul(parts.lmHead) instanceof TiedLMHead;
  let bytes = 0;
  for (const [, t] of model.namedTensors()) {
    const size = t.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[t.dtype];
    if (!tables.has(t)) bytes += size;
    else {bytes += size / t.shape[0]! +
        (tied && t === parts.embedTokens.weight ? size : 0);}
  }
  return bytes;
}
