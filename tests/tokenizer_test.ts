import assert from "node:assert/strict";
import { join } from "node:path";
import { MissingTokenizerError, Tokenizer } from "../src/models/tokenizer.ts";

const MODEL = new URL("../models/tinystories-656k", import.meta.url).pathname;
const FIXTURES = new URL("./fixtures/models", import.meta.url).pathname;
const reference = JSON.parse(
  await Deno.readTextFile(join(FIXTURES, "tinystories-reference.json")),
);
const tok = await Tokenizer.load(MODEL);

Deno.test("tokenizer ids equal the HF tokenizers library on every fixture string, with and without BOS", () => {
  assert.equal(reference.tokenization.length, 12);
  for (const t of reference.tokenization) {
    assert.deepEqual(tok.encode(t.text), t.ids, JSON.stringify(t.text));
    assert.deepEqual(
      tok.encode(t.text, { special: false }),
      t.ids_no_special,
      JSON.stringify(t.text),
    );
  }
  // the prompts the reference generation uses
  assert.deepEqual(
    tok.encode(reference.prompt),
    reference.tokenization[0].transformers.ids,
  );
});

Deno.test("decode skips special tokens as transformers does, wherever both tokenize alike", () => {
  let checked = 0;
  for (const t of reference.tokenization) {
    if (!t.ids_agree) continue;
    assert.equal(
      tok.decode(t.ids),
      t.transformers.decoded_skip_special,
      JSON.stringify(t.text),
    );
    checked++;
  }
  assert.ok(checked >= 7);
  assert.equal(
    tok.decode([1, 80, 147, 201, 282, 57], { skipSpecial: false }),
    "<|start_story|> Once upon a time",
  );
});

Deno.test("BOS and EOS come from tokenizer_config.json and generation_config.json", () => {
  assert.equal(tok.bosId, reference.special_tokens.bos[1]);
  assert.deepEqual(tok.eosIds, [reference.special_tokens.eos[1]]);
  assert.equal(tok.available, true);
  assert.equal(tok.chatTemplate, null);
});

Deno.test("streamed text equals the whole decode, piece by piece, after any prompt", () => {
  const ids = reference.greedy_stops_at_eos.ids as number[];
  for (const cut of [1, 6, 20]) {
    const stream = tok.stream(ids.slice(0, cut));
    let text = "";
    for (const id of ids.slice(cut)) text += stream.push(id);
    text += stream.flush();
    assert.equal(
      text,
      tok.decode(ids).slice(tok.decode(ids.slice(0, cut)).length),
      `cut ${cut}`,
    );
  }
  // the greedy continuation from the prompt, as transformers decodes it
  const greedy = tok.stream(ids.slice(0, 6));
  let text = "";
  for (const id of ids.slice(6)) text += greedy.push(id);
  assert.equal(text, reference.greedy_new_text);
});

Deno.test("the stream holds back a byte-fallback character until its last byte arrives", async () => {
  // A tokenizer with byte tokens: "é" is <0xC3><0xA9>, which must never
  // come out as two broken halves.
  const dir = await Deno.makeTempDir();
  try {
    const vocab: Record<string, number> = { "<unk>": 0, "▁": 1, "a": 2 };
    for (let b = 0; b < 256; b++) {
      vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = 3 + b;
    }
    await Deno.writeTextFile(
      join(dir, "tokenizer.json"),
      JSON.stringify({
        version: "1.0",
        added_tokens: [],
        normalizer: null,
        pre_tokenizer: null,
        post_processor: null,
        decoder: {
          type: "Sequence",
          decoders: [
            { type: "Replace", pattern: { String: "▁" }, content: " " },
            { type: "ByteFallback" },
            { type: "Fuse" },
          ],
        },
        model: {
          type: "BPE",
          vocab,
          merges: [],
          unk_token: "<unk>",
          byte_fallback: true,
          fuse_unk: false,
        },
      }),
    );
    const t = await Tokenizer.load(dir);
    const ids = t.encode("aé", { special: false });
    assert.deepEqual(ids, [2, 3 + 0xc3, 3 + 0xa9]);
    const s = t.stream();
    assert.deepEqual(ids.map((id) => s.push(id)), ["a", "", "é"]);
    // cut in the middle: flush gives the replacement character, not nothing
    const s2 = t.stream();
    assert.deepEqual([s2.push(ids[0]!), s2.push(ids[1]!)], ["a", ""]);
    assert.equal(s2.flush(), "\uFFFD");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("chat template renders as transformers' apply_chat_template and tokenizes to the fixture ids", async () => {
  const chat = JSON.parse(
    await Deno.readTextFile(join(FIXTURES, "chat_template.json")),
  );
  const dir = await Deno.makeTempDir();
  try {
    await Deno.copyFile(
      join(MODEL, "tokenizer.json"),
      join(dir, "tokenizer.json"),
    );
    await Deno.writeTextFile(
      join(dir, "tokenizer_config.json"),
      JSON.stringify(chat.tokenizer_config),
    );
    const t = await Tokenizer.load(dir);
    assert.ok(chat.cases.length >= 3);
    for (const c of chat.cases) {
      const opts = { addGenerationPrompt: c.add_generation_prompt };
      assert.equal(t.applyChatTemplate(c.messages, opts), c.text);
      assert.deepEqual(t.encodeChat(c.messages, opts), c.ids_no_special);
    }
    assert.throws(
      () => t.applyChatTemplate(chat.unknown_role.messages),
      new RegExp(chat.unknown_role.error),
    );
    // no template: one line naming the folder
    assert.throws(
      () => tok.applyChatTemplate([{ role: "user", content: "hi" }]),
      /tinystories-656k has no chat template \(no chat_template in tokenizer_config\.json, no chat_template\.jinja\): --chat needs one/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a folder without tokenizer.json loads; text methods name the missing file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const t = await Tokenizer.load(dir);
    assert.equal(t.available, false);
    const file = join(dir, "tokenizer.json");
    for (
      const f of [() => t.encode("x"), () => t.decode([1]), () => t.stream()]
    ) {
      assert.throws(f, (e: unknown) => {
        assert.ok(e instanceof MissingTokenizerError);
        assert.equal(
          e.message,
          `no tokenizer: ${file} is missing (text needs it; token ids work without it)`,
        );
        return true;
      });
    }
    await Deno.writeTextFile(file, "{not json");
    await assert.rejects(
      () => Tokenizer.load(dir),
      /tokenizer\.json: invalid JSON/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a tokenizer.json the library cannot build still loads the model; text calls say why", async () => {
  const { makeDemoCheckpoint } = await import("../src/demo/demo_checkpoint.ts");
  const { loadCausalLM } = await import("../src/models/load_causal_lm.ts");
  const dir = await Deno.makeTempDir();
  try {
    const model = join(dir, "m");
    await makeDemoCheckpoint(model, { layers: 1, hidden: 16, vocab: 32 });
    const lm = await loadCausalLM(model);
    try {
      assert.equal(lm.tokenizer.available, false);
      assert.throws(
        () => lm.tokenizer.encode("x"),
        new RegExp(
          `^Error: ${
            join(model, "tokenizer.json")
          }: not a usable tokenizer \\(`,
        ),
      );
      const stats = await lm.generate([1, 5, 7], {
        temperature: 0,
        maxNewTokens: 3,
        ignoreEos: true,
      }).done();
      assert.equal(stats.tokens.length, 3);
      assert.equal(stats.text, "");
    } finally {
      lm.dispose();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
