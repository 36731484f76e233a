/**
 * Placeholder of the runtime contract's Engine interface (H11 owns this file
 * on branch i11; this copy is replaced by theirs at merge).
 *
 * @module
 */

/** Sampling parameters; temperature 0 is greedy. */
export interface SamplerParams {
  /** Softmax temperature; 0 picks the argmax. */
  temperature: number;
  /** Keep the k most probable tokens; 0 keeps all. */
  topK: number;
  /** Keep the smallest prefix of mass >= topP. */
  topP: number;
}

/** Runs a model step by step with a KV cache. */
export interface Engine {
  /** Which engine. */
  readonly name: "cpu" | "webgpu";
  /** Feeds `tokens` at positions [pos, pos + n); logits of the last row or all rows. */
  step(
    tokens: readonly number[],
    pos: number,
    rows: "last" | "all",
  ): Promise<Float32Array>;
  /** Like step(…, "last") but returns the sampled token id. */
  stepAndSample(
    tokens: readonly number[],
    pos: number,
    sampler: SamplerParams,
    u: number,
  ): Promise<number>;
  /** Empties the KV cache. */
  reset(): void;
  /** Frees buffers. */
  dispose(): void;
}
