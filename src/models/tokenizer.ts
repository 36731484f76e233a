/**
 * Text ⇄ token ids for a model folder: `tokenizer.json` (+
 * `tokenizer_config.json`) through `@huggingface/tokenizers`, BOS/EOS as the
 * config says, the model's chat template through `@huggingface/jinja`, and a
 * streaming decoder that never emits half a character.
 *
 * A folder without `tokenizer.json` still gives a {@linkcode Tokenizer}: the
 * token-id API of the runtime works, and every text method throws a
 * {@linkcode MissingTokenizerError} naming the missing file (or, for a
 * `tokenizer.json` the library cannot build, an error saying why).
 *
 * @module
 */

import { join } from "node:path";
import { Tokenizer as HfTokenizer } from "npm:@huggingface/tokenizers@^0.2.0";
import { Template } from "npm:@huggingface/jinja@^0.5.13";

/** One message of a chat, as chat templates expect it. */
export interface ChatMessage {
  /** `system`, `user` or `assistant`. */
  role: string;
  /** The text of the message. */
  content: string;
}

/** A text method was called on a model folder that has no tokenizer. */
export class MissingTokenizerError extends Error {
  /** Builds the error for the missing file at `file`. */
  constructor(readonly file: string) {
    super(
      `no tokenizer: ${file} is missing (text needs it; token ids work without it)`,
    );
    this.name = "MissingTokenizerError";
  }
}

type Json = Record<string, unknown>;

async function readJson(path: string): Promise<Json | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  try {
    const v = JSON.parse(text);
    if (v === null || typeof v !== "object" || Array.isArray(v)) {
      throw new SyntaxError("not a JSON object");
    }
    return v as Json;
  } catch (e) {
    throw new Error(
      `${path}: invalid JSON (${e instanceof Error ? e.message : e})`,
    );
  }
}

// `"<s>"` or `{ "content": "<s>", … }` in tokenizer_config.json.
function tokenText(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as Json).content === "string") {
    return (v as Json).content as string;
  }
  return null;
}

function ids(v: unknown): number[] {
  if (typeof v === "number") return [v];
  if (Array.isArray(v)) return v.filter((x) => typeof x === "number");
  return [];
}

// The default template, or the one named "default" where a config lists several.
function chatTemplateOf(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    const named = v.find((t) => t?.name === "default") ?? v[0];
    return typeof named?.template === "string" ? named.template : null;
  }
  return null;
}

/**
 * A model's tokenizer. Load it with {@linkcode Tokenizer.load}.
 *
 * @example Encode and decode with TinyStories-656K's tokenizer
 * ```ts
 * import { Tokenizer } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const tok = await Tokenizer.load("models/tinystories-656k");
 * const ids = tok.encode("Once upon a time");
 * assert.equal(ids[0], tok.bosId); // add_bos_token in tokenizer_config.json
 * assert.equal(tok.decode(ids), "Once upon a time");
 * ```
 */
export class Tokenizer {
  #hf: HfTokenizer | null;
  #template: string | null;
  #addBos: boolean | null;
  #addEos: boolean | null;
  #bosText: string | null;
  #eosText: string | null;
  #unavailable: () => Error;
  #dir: string;
  /** The id of the beginning-of-sequence token, or null. */
  readonly bosId: number | null;
  /** Every id that ends a generation (tokenizer and generation configs). */
  readonly eosIds: readonly number[];

  private constructor(
    hf: HfTokenizer | null,
    config: Json,
    generation: Json,
    template: string | null,
    unavailable: (() => Error) | null,
    dir: string,
  ) {
    this.#hf = hf;
    this.#dir = dir;
    this.#unavailable = unavailable ?? (() => new Error("no tokenizer"));
    this.#template = template;
    this.#addBos = typeof config.add_bos_token === "boolean"
      ? config.add_bos_token
      : null;
    this.#addEos = typeof config.add_eos_token === "boolean"
      ? config.add_eos_token
      : null;
    this.#bosText = tokenText(config.bos_token);
    this.#eosText = tokenText(config.eos_token);
    const id = (t: string | null) =>
      t === null ? undefined : hf?.token_to_id(t);
    this.bosId = id(this.#bosText) ?? ids(generation.bos_token_id)[0] ?? null;
    const eos = new Set<number>(ids(generation.eos_token_id));
    const e = id(this.#eosText);
    if (e !== undefined) eos.add(e);
    this.eosIds = Object.freeze([...eos].sort((a, b) => a - b));
  }

  /**
   * Reads the tokenizer of the model folder `dir`: `tokenizer.json`,
   * `tokenizer_config.json` (BOS/EOS flags, special tokens, chat template),
   * `chat_template.jinja` where present, and `generation_config.json` (EOS
   * ids). Without `tokenizer.json` the result has {@linkcode Tokenizer.available}
   * false and its text methods throw {@linkcode MissingTokenizerError}.
   */
  static async load(dir: string): Promise<Tokenizer> {
    const file = join(dir, "tokenizer.json");
    const json = await readJson(file);
    const config = await readJson(join(dir, "tokenizer_config.json")) ?? {};
    const generation = await readJson(join(dir, "generation_config.json")) ??
      {};
    let template = chatTemplateOf(config.chat_template);
    try {
      template = await Deno.readTextFile(join(dir, "chat_template.jinja"));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    if (json === null) {
      return new Tokenizer(
        null,
        config,
        generation,
        template,
        () => new MissingTokenizerError(file),
        dir,
      );
    }
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(json, config);
    } catch (e) {
      // The model still runs on token ids; text calls say why they cannot.
      const why = `${file}: not a usable tokenizer (${
        e instanceof Error ? e.message : e
      })`;
      return new Tokenizer(
        null,
        config,
        generation,
        template,
        () => new Error(why),
        dir,
      );
    }
    return new Tokenizer(hf, config, generation, template, null, dir);
  }

  /** Whether the folder had a tokenizer (else text methods throw). */
  get available(): boolean {
    return this.#hf !== null;
  }

  /** The model's chat template (Jinja), or null when it has none. */
  get chatTemplate(): string | null {
    return this.#template;
  }

  #need(): HfTokenizer {
    if (!this.#hf) throw this.#unavailable();
    return this.#hf;
  }

  /**
   * Token ids of `text`. With `special` (the default) BOS/EOS are added as
   * `add_bos_token`/`add_eos_token` in tokenizer_config.json say, or by the
   * tokenizer's own post-processor where the config does not say.
   */
  encode(text: string, options: { special?: boolean } = {}): number[] {
    const hf = this.#need();
    const special = options.special ?? true;
    if (!special) return hf.encode(text, { add_special_tokens: false }).ids;
    if (this.#addBos === null && this.#addEos === null) {
      return hf.encode(text, { add_special_tokens: true }).ids;
    }
    const out = hf.encode(text, { add_special_tokens: false }).ids;
    if (this.#addBos && this.bosId !== null) out.unshift(this.bosId);
    const eos = this.#eosText === null
      ? undefined
      : hf.token_to_id(this.#eosText);
    if (this.#addEos && eos !== undefined) out.push(eos);
    return out;
  }

  /** The text of `ids`; special tokens are left out unless `skipSpecial` is false. */
  decode(
    ids: readonly number[],
    options: { skipSpecial?: boolean } = {},
  ): string {
    const hf = this.#need();
    if (ids.length === 0) return "";
    return hf.decode([...ids], {
      skip_special_tokens: options.skipSpecial ?? true,
    });
  }

  /** The vocabulary entry of `id` (e.g. `▁the`), or undefined. */
  idToToken(id: number): string | undefined {
    return this.#need().id_to_token(id);
  }

  /**
   * Renders `messages` with the model's chat template (as transformers'
   * `apply_chat_template(…, tokenize=False)` does), ending with the
   * assistant's turn when `addGenerationPrompt` (default true).
   */
  applyChatTemplate(
    messages: readonly ChatMessage[],
    options: { addGenerationPrompt?: boolean } = {},
  ): string {
    this.#need();
    if (this.#template === null) {
      throw new Error(
        `${this.#dir} has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja): --chat needs one`,
      );
    }
    return new Template(this.#template).render({
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? true,
      bos_token: this.#bosText ?? "",
      eos_token: this.#eosText ?? "",
    });
  }

  /** Token ids of a chat: the template's text, with no BOS added twice. */
  encodeChat(
    messages: readonly ChatMessage[],
    options: { addGenerationPrompt?: boolean } = {},
  ): number[] {
    return this.encode(this.applyChatTemplate(messages, options), {
      special: false,
    });
  }

  /**
   * A decoder for tokens as they are generated after `context` (the prompt
   * ids): each {@linkcode TextStream.push} returns the new text, holding
   * back bytes of a character that is not complete yet.
   */
  stream(context: readonly number[] = []): TextStream {
    this.#need();
    return new TextStream(this, context);
  }
}

// Tokens of context kept before the new ones, so spaces and merges that
// depend on the previous token decode as in the whole text.
const CONTEXT_TOKENS = 4;

/**
 * Incremental detokenization: the text of each new token is the difference
 * between decoding a short window with and without it. A decode that ends in
 * U+FFFD (a byte-fallback character still incomplete) waits for more tokens.
 */
export class TextStream {
  #tok: Tokenizer;
  #ids: number[];
  #start: number;
  #read: number;

  /** A stream after `context`; use {@linkcode Tokenizer.stream}. */
  constructor(tokenizer: Tokenizer, context: readonly number[]) {
    this.#tok = tokenizer;
    this.#ids = context.slice(-CONTEXT_TOKENS);
    this.#start = 0;
    this.#read = this.#ids.length;
  }

  /** Adds the token `id`; returns the text it completes (maybe empty). */
  push(id: number): string {
    this.#ids.push(id);
    const before = this.#tok.decode(this.#ids.slice(this.#start, this.#read));
    const after = this.#tok.decode(this.#ids.slice(this.#start));
    if (after.length <= before.length || after.endsWith("\uFFFD")) return "";
    this.#ids = this.#ids.slice(this.#read - Math.min(this.#read, 1));
    this.#start = 0;
    this.#read = this.#ids.length;
    return after.slice(before.length);
  }

  /** The text still held back at the end (an incomplete character, as U+FFFD). */
  flush(): string {
    if (this.#read === this.#ids.length) return "";
    const before = this.#tok.decode(this.#ids.slice(this.#start, this.#read));
    const after = this.#tok.decode(this.#ids.slice(this.#start));
    this.#read = this.#ids.length;
    return after.slice(before.length);
  }
}
