/**
 * The {@linkcode Engine} interface: what runs a causal LM's forward pass,
 * one implementation per backend (`cpu_engine.ts`, `webgpu_engine.ts`), both
 * built from the same {@linkcode ModelConfig} and Module tree.
 *
 * @module
 */

export type { ModelConfig } from "./config.ts";

/**
 * How the next token is chosen. `temperature` 0 is greedy (argmax, lowest id
 * on ties). Otherwise: logits / T → softmax → keep the top-k (k 0 = all) →
 * keep the smallest prefix of the descending-probability order whose mass
 * ≥ `topP` → renormalise → inverse CDF with the caller's uniform `u`.
 */
export interface SamplerParams {
  /** Softmax temperature; 0 for greedy. */
  temperature: number;
  /** Keep the k most likely tokens; 0 keeps all. */
  topK: number;
  /** Keep the smallest most-likely set with this much probability mass; 1 keeps all. */
  topP: number;
}

/** What an engine reports for the benches. */
export interface EngineStats {
  /** GPU dispatches per decoded token (WebGPU), if known. */
  dispatchesPerToken?: number;
  /** GPU time per decoded token in milliseconds (WebGPU), if measured. */
  gpuMsPerToken?: number;
  /** Bytes of weights read per decoded token (the roofline's numerator). */
  weightBytesPerToken: number;
}

/**
 * Runs a model's forward pass with a KV cache. Positions are absolute: a
 * step at `pos` appends its tokens' keys and values at [pos, pos + n).
 *
 * @example A greedy sampler setting
 * ```ts
 * import type { SamplerParams } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const greedy: SamplerParams = { temperature: 0, topK: 0, topP: 1 };
 * assert.equal(greedy.temperature, 0);
 * ```
 */
export interface Engine {
  /** The backend's name. */
  readonly name: "cpu" | "webgpu";
  /**
   * Feeds `tokens` at positions [pos, pos + n) through the model, appending
   * to the KV cache. Returns f32 logits: the last row only ([vocab]) or
   * every row ([n, vocab], row-major).
   */
  step(
    tokens: readonly number[],
    pos: number,
    rows: "last" | "all",
  ): Promise<Float32Array>;
  /**
   * Like `step(…, "last")` but returns the next token id chosen by `sampler`
   * with the uniform random number `u` in [0, 1) drawn by the caller (so
   * every engine picks the same token).
   */
  stepAndSample(
    tokens: readonly number[],
    pos: number,
    sampler: SamplerParams,
    u: number,
  ): Promise<number>;
  /** Empties the KV cache (the next step starts at position 0). */
  reset(): void;
  /** Frees buffers. */
  dispose(): void;
  /** Figures for the benches, where the engine keeps them. */
  stats?(): EngineStats;
}
