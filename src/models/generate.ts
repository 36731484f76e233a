/**
 * The generation loop: prefill the prompt in one engine step, then one step
 * per new token, each choosing its token with the shared sampler and a `u`
 * from a seeded generator, until EOS or the token budget. Text comes out as
 * it is produced, through the tokenizer's streaming decoder.
 *
 * @module
 */

import type { Engine, SamplerParams } from "./engine.ts";
import {
  checkSamplerParams,
  DEFAULT_SAMPLING,
  SeededRandom,
} from "./sampler.ts";
import type { ChatMessage, TextStream, Tokenizer } from "./tokenizer.ts";

/** What a generation runs on: an engine, its tokenizer and its limits. */
export interface GenerationTarget {
  /** The engine (its KV cache is reset first). */
  readonly engine: Engine;
  /** The tokenizer (text prompts and the `text` of each token need it). */
  readonly tokenizer: Tokenizer;
  /** Positions the model handles (`max_position_embeddings`). */
  readonly contextLength: number;
  /** Vocabulary size: prompt ids must be below it. */
  readonly vocabSize: number;
  /** Ids that end a generation, besides the tokenizer's. */
  readonly eosIds?: readonly number[];
}

/** Options of {@linkcode generate}. */
export interface GenerateOptions extends Partial<SamplerParams> {
  /** New tokens at most (default 64, or what the context leaves when less). */
  maxNewTokens?: number;
  /** Seed of the sampler's random numbers (default: a random one, see {@linkcode GenerationStats.seed}). */
  seed?: number;
  /** Keep going past EOS until `maxNewTokens` (default false). */
  ignoreEos?: boolean;
}

/** A prompt: text (tokenized with BOS as the model wants), ids, or a chat. */
export type Prompt = string | readonly number[] | {
  readonly messages: readonly ChatMessage[];
};

/** One generated token. */
export interface GeneratedToken {
  /** Token id. */
  id: number;
  /** The text it completes (may be empty while a character is incomplete; empty without a tokenizer). */
  text: string;
}

/** Figures of a finished (or stopped) generation. */
export interface GenerationStats {
  /** The prompt's ids. */
  promptIds: number[];
  /** Generated ids (EOS not included). */
  tokens: number[];
  /** Generated text. */
  text: string;
  /** Why it stopped. */
  stop: "eos" | "length";
  /** The seed of the random numbers. */
  seed: number;
  /** Sampling used. */
  sampling: SamplerParams;
  /** Milliseconds of the prefill step (prompt in, first token out). */
  prefillMs: number;
  /** Milliseconds of the decode steps after it (engine time only). */
  decodeMs: number;
  /** Prompt tokens per second of the prefill. */
  prefillTokS: number;
  /** Tokens per second of the decode steps (each feeds one token). */
  decodeTokS: number;
}

/**
 * A generation in progress: iterate it for tokens; {@linkcode Generation.stats}
 * holds the figures once the iteration ends.
 */
export class Generation implements AsyncIterable<GeneratedToken> {
  #run: () => AsyncGenerator<GeneratedToken>;
  #stats: GenerationStats | null = null;
  #started = false;

  /** Use {@linkcode generate}. */
  constructor(
    run: (done: (s: GenerationStats) => void) => AsyncGenerator<GeneratedToken>,
  ) {
    this.#run = () => run((s) => (this.#stats = s));
  }

  /** The figures, once iteration has finished (null before). */
  get stats(): GenerationStats | null {
    return this.#stats;
  }

  /** Tokens as they are generated (a generation runs once). */
  [Symbol.asyncIterator](): AsyncIterator<GeneratedToken> {
    if (this.#started) throw new Error("a Generation can be iterated once");
    this.#started = true;
    return this.#run();
  }

  /** Runs to the end and returns the figures. */
  async done(): Promise<GenerationStats> {
    for await (const _ of this);
    return this.#stats!;
  }
}

/** The prompt's ids, checked against the vocabulary. */
export function promptIds(target: GenerationTarget, prompt: Prompt): number[] {
  let ids: number[];
  if (typeof prompt === "string") ids = target.tokenizer.encode(prompt);
  else if ("messages" in prompt) {
    ids = target.tokenizer.encodeChat(prompt.messages);
  } else ids = [...prompt];
  for (const id of ids) {
    if (!(Number.isInteger(id) && id >= 0 && id < target.vocabSize)) {
      throw new RangeError(
        `token id ${id} in the prompt is outside the vocabulary (0..${
          target.vocabSize - 1
        })`,
      );
    }
  }
  return ids;
}

/**
 * Checks a generation's budget: a non-empty prompt that fits the context,
 * and room for `maxNewTokens` after it. Throws a RangeError saying what does
 * not fit.
 */
export function checkBudget(
  promptTokens: number,
  maxNewTokens: number,
  contextLength: number,
): void {
  if (!(Number.isInteger(maxNewTokens) && maxNewTokens >= 1)) {
    throw new RangeError(
      `max new tokens must be a whole number >= 1, got ${maxNewTokens}`,
    );
  }
  if (promptTokens === 0) {
    throw new RangeError("the prompt is empty (0 tokens)");
  }
  if (promptTokens > contextLength) {
    throw new RangeError(
      `the prompt is ${promptTokens} tokens, longer than the model's context of ${contextLength} tokens`,
    );
  }
  if (promptTokens + maxNewTokens > contextLength) {
    throw new RangeError(
      `${promptTokens} prompt tokens + ${maxNewTokens} new tokens = ${
        promptTokens + maxNewTokens
      } is past the model's context of ${contextLength} tokens (at most ${
        contextLength - promptTokens
      } new tokens fit)`,
    );
  }
}

/**
 * Generates up to `maxNewTokens` tokens after `prompt` on `target`: an async
 * iterable of `{ id, text }`. The prompt and the budget are checked before
 * anything runs (errors are thrown by this call, not by the iteration).
 *
 * @example Greedy tokens from TinyStories-656K, then the figures
 * ```ts
 * import { generate, loadCausalLM } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const lm = await loadCausalLM("models/tinystories-656k");
 * const gen = generate(lm, "Once upon a time", { temperature: 0, maxNewTokens: 20 });
 * let text = "";
 * for await (const t of gen) text += t.text;
 * assert.equal(text, gen.stats!.text);
 * assert.equal(gen.stats!.tokens.length, 20);
 * assert.ok(gen.stats!.decodeTokS > 0);
 * lm.dispose();
 * ```
 */
export function generate(
  target: GenerationTarget,
  prompt: Prompt,
  options: GenerateOptions = {},
): Generation {
  const sampling: SamplerParams = {
    temperature: options.temperature ?? DEFAULT_SAMPLING.temperature,
    topK: options.topK ?? DEFAULT_SAMPLING.topK,
    topP: options.topP ?? DEFAULT_SAMPLING.topP,
  };
  checkSamplerParams(sampling);
  const ids = promptIds(target, prompt);
  const maxNew = options.maxNewTokens ??
    Math.max(1, Math.min(64, target.contextLength - ids.length));
  checkBudget(ids.length, maxNew, target.contextLength);
  const seed = options.seed ??
    crypto.getRandomValues(new Uint32Array(1))[0]!;
  const rng = new SeededRandom(seed);
  const eos = new Set([...(target.eosIds ?? []), ...target.tokenizer.eosIds]);
  const stream: TextStream | null = target.tokenizer.available
    ? target.tokenizer.stream(ids)
    : null;
  return new Generation(async function* (done) {
    const { engine } = target;
    const tokens: number[] = [];
    let text = "";
    let stop: GenerationStats["stop"] = "length";
    let prefillMs = 0;
    let decodeMs = 0;
    let steps = 0;
    const finish = () => {
      done({
        promptIds: ids,
        tokens,
        text,
        stop,
        seed,
        sampling,
        prefillMs,
        decodeMs,
        prefillTokS: prefillMs > 0 ? ids.length / (prefillMs / 1000) : 0,
        decodeTokS: decodeMs > 0 ? steps / (decodeMs / 1000) : 0,
      });
    };
    engine.reset();
    try {
      let t0 = performance.now();
      let next = await engine.stepAndSample(ids, 0, sampling, rng.next());
      prefillMs = performance.now() - t0;
      for (let pos = ids.length;;) {
        if (eos.has(next) && !options.ignoreEos) {
          stop = "eos";
          break;
        }
        tokens.push(next);
        const piece = stream ? stream.push(next) : "";
        text += piece;
        yield { id: next, text: piece };
        if (tokens.length === maxNew) break;
        t0 = performance.now();
        next = await engine.stepAndSample([next], pos++, sampling, rng.next());
        decodeMs += performance.now() - t0;
        steps++;
      }
      // An incomplete character at the very end (shown as U+FFFD) is only
      // in the stats' text: no token is left to carry it.
      if (stream) text += stream.flush();
    } finally {
      finish();
    }
  });
}
