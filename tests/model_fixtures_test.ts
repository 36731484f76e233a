// Checks that the model reference fixtures (tests/fixtures/models, made by
// tools/make_model_fixtures.py with Hugging Face transformers) are well-formed, so a broken
// regeneration is caught here rather than as a puzzling parity failure in the runtime tests.
// It reads the safetensors files with its own few-line parser, independent of src/.
import assert from "node:assert/strict";
import { join } from "node:path";

const DIR = join(import.meta.dirname!, "fixtures", "models");

type Dtype = "BF16" | "F16" | "F32" | "I64";
const SIZE: Record<Dtype, number> = { BF16: 2, F16: 2, F32: 4, I64: 8 };

interface Entry {
  dtype: Dtype;
  shape: number[];
  bytes: Uint8Array;
}

function readSafetensors(path: string): Map<string, Entry> {
  const buf = Deno.readFileSync(path);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  const header = JSON.parse(
    new TextDecoder().decode(buf.subarray(8, 8 + headerLen)),
  ) as Record<
    string,
    { dtype: Dtype; shape: number[]; data_offsets: [number, number] }
  >;
  const base = 8 + headerLen;
  const out = new Map<string, Entry>();
  let end = 0;
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    assert.ok(info.dtype in SIZE, `${path}: ${name} has dtype ${info.dtype}`);
    const [a, b] = info.data_offsets;
    const n = info.shape.reduce((x, y) => x * y, 1);
    assert.equal(b - a, n * SIZE[info.dtype], `${path}: ${name} byte size`);
    end = Math.max(end, b);
    out.set(name, {
      dtype: info.dtype,
      shape: info.shape,
      bytes: buf.slice(base + a, base + b),
    });
  }
  assert.equal(base + end, buf.byteLength, `${path}: trailing bytes`);
  return out;
}

function f32(e: Entry): Float32Array {
  assert.equal(e.dtype, "F32");
  return new Float32Array(e.bytes.buffer);
}

function ids(e: Entry): number[] {
  assert.equal(e.dtype, "I64");
  return Array.from(new BigInt64Array(e.bytes.buffer), Number);
}

function floats(e: Entry): Float32Array {
  if (e.dtype === "F32") return f32(e);
  const u16 = new Uint16Array(e.bytes.buffer);
  const out = new Float32Array(u16.length);
  if (e.dtype === "BF16") {
    const u32 = new Uint32Array(out.buffer);
    for (let i = 0; i < u16.length; i++) u32[i] = u16[i] << 16;
  } else {
    const dv = new DataView(e.bytes.buffer);
    for (let i = 0; i < u16.length; i++) {
      out[i] = dv.getFloat16(2 * i, true);
    }
  }
  return out;
}

function get(t: Map<string, Entry>, name: string): Entry {
  const e = t.get(name);
  assert.ok(e, `missing tensor ${name}`);
  return e;
}

function assertFinite(a: Float32Array, what: string): void {
  for (let i = 0; i < a.length; i++) {
    assert.ok(Number.isFinite(a[i]), `${what}[${i}] = ${a[i]}`);
  }
}

/** Mean cross-entropy of next-token prediction, the way transformers' causal-LM loss computes it. */
function causalLoss(logits: Float32Array, tokens: number[], vocab: number) {
  let sum = 0;
  for (let t = 0; t + 1 < tokens.length; t++) {
    const row = logits.subarray(t * vocab, (t + 1) * vocab);
    let max = -Infinity;
    for (const x of row) max = Math.max(max, x);
    let z = 0;
    for (const x of row) z += Math.exp(x - max);
    sum += max + Math.log(z) - row[tokens[t + 1]];
  }
  return sum / (tokens.length - 1);
}

function readJson(path: string): Record<string, unknown> {
  return JSON.parse(Deno.readTextFileSync(path));
}

const folders = [...Deno.readDirSync(DIR)].filter((e) => e.isDirectory)
  .map((e) => e.name).sort();

Deno.test("model fixtures: a family folder exists for every decoder family", () => {
  const types = new Set(
    folders.map((f) =>
      readJson(join(DIR, f, "config.json")).model_type as string
    ),
  );
  for (
    const t of [
      "llama",
      "mistral",
      "qwen2",
      "gemma",
      "gemma2",
      "phi3",
      "gpt2",
      "opt",
      "codegen",
    ]
  ) {
    assert.ok(types.has(t), `no fixture with model_type ${t}`);
  }
});

Deno.test("model fixtures: the README documents every folder and file", () => {
  const readme = Deno.readTextFileSync(join(DIR, "README.md"));
  for (const f of folders) {
    assert.ok(readme.includes(`\`${f}/\``), `README.md does not list ${f}/`);
  }
  for (const e of Deno.readDirSync(DIR)) {
    if (e.isFile && e.name !== "README.md") {
      assert.ok(readme.includes(e.name), `README.md does not list ${e.name}`);
    }
  }
});

for (const name of folders) {
  Deno.test(`model fixture ${name}: weights, logits, greedy ids and loss are consistent`, () => {
    const dir = join(DIR, name);
    const config = readJson(join(dir, "config.json"));
    const vocab = config.vocab_size as number;
    assert.ok(Number.isInteger(vocab) && vocab > 0, "config.json vocab_size");

    const weights = readSafetensors(join(dir, "model.safetensors"));
    assert.ok(weights.size > 0);
    const ref = readJson(join(dir, "reference.json"));
    const declared = ref.tensors as Record<string, number[]>;
    assert.deepEqual([...weights.keys()].sort(), Object.keys(declared).sort());
    let params = 0;
    for (const [tname, e] of weights) {
      assert.deepEqual(e.shape, declared[tname], `${tname} shape`);
      assertFinite(floats(e), `${name} ${tname}`);
      params += e.shape.reduce((x, y) => x * y, 1);
    }
    assert.equal(params, ref.parameters);
    assert.ok(
      Deno.statSync(join(dir, "model.safetensors")).size < 160_000,
      "fixture checkpoints stay small",
    );

    const t = readSafetensors(join(dir, "reference.safetensors"));
    const input = ids(get(t, "input_ids"));
    const seq = ref.seq_len as number;
    assert.deepEqual(get(t, "input_ids").shape, [seq]);
    assert.deepEqual(get(t, "logits").shape, [seq, vocab]);
    const greedy = ids(get(t, "greedy_ids"));
    assert.equal(greedy.length, seq + (ref.new_tokens as number));
    assert.deepEqual(
      greedy.slice(0, seq),
      input,
      "greedy ids start with the prompt",
    );
    for (const id of greedy) assert.ok(id >= 0 && id < vocab, `token ${id}`);

    const logits = f32(get(t, "logits"));
    assertFinite(logits, `${name} logits`);
    // The stored loss is transformers' model(ids, labels=ids).loss: recomputing it from the stored
    // logits ties the two files together (a logits file from another run would not match).
    const loss = causalLoss(logits, input, vocab);
    assert.ok(
      Math.abs(loss - (ref.loss as number)) < 1e-4,
      `loss ${loss} vs reference ${ref.loss}`,
    );
    // The last logits row predicts the first greedy token.
    const last = logits.subarray((seq - 1) * vocab);
    let best = 0;
    for (let i = 1; i < vocab; i++) if (last[i] > last[best]) best = i;
    assert.equal(greedy[seq], best);
  });
}

Deno.test("model fixtures: TinyStories references are consistent", () => {
  const t = readSafetensors(join(DIR, "tinystories-reference.safetensors"));
  const ref = readJson(join(DIR, "tinystories-reference.json"));
  const vocab = 2048;
  for (const key of ["prompt", "long_prompt"]) {
    const tokens = ids(get(t, `${key}_ids`));
    assert.equal(tokens[0], 1, "BOS first");
    assert.equal(tokens.length, ref[`${key}_tokens`]);
    assert.deepEqual(get(t, `${key}_logits`).shape, [tokens.length, vocab]);
    assertFinite(f32(get(t, `${key}_logits`)), `${key}_logits`);
  }
  const prompt = ids(get(t, "prompt_ids"));
  const greedy = ids(get(t, "greedy_ids"));
  assert.equal(
    greedy.length,
    prompt.length + (ref.greedy_new_tokens as number),
  );
  assert.deepEqual(greedy.slice(0, prompt.length), prompt);
  const promptLogits = f32(get(t, "prompt_logits"));
  const last = promptLogits.subarray((prompt.length - 1) * vocab);
  let best = 0;
  for (let i = 1; i < vocab; i++) if (last[i] > last[best]) best = i;
  assert.equal(greedy[prompt.length], best);

  const para = ref.paragraph as Record<string, number>;
  const tokens = ids(get(t, "paragraph_ids"));
  assert.equal(tokens.length, para.tokens);
  const nll = f32(get(t, "paragraph_token_nll"));
  assert.equal(nll.length, tokens.length - 1);
  const sum = nll.reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(sum - para.nll_sum) < 1e-3 * para.nll_sum);
  assert.ok(Math.abs(Math.exp(sum / nll.length) - para.ppl) < 1e-3 * para.ppl);
  assert.ok(para.ppl > 5 && para.ppl < 40, `paragraph ppl ${para.ppl}`);

  for (const s of ref.paragraph_sliding as Record<string, unknown>[]) {
    const windows = s.windows as Record<string, number>[];
    assert.equal(
      windows.reduce((a, w) => a + w.scored_tokens, 0),
      s.tokens,
    );
    assert.equal(
      s.tokens,
      tokens.length - 1,
      "every token after BOS scored once",
    );
    assert.ok(
      Math.abs(windows.reduce((a, w) => a + w.nll_sum, 0) - (s.nll as number)) <
        1e-6 * (s.nll as number),
    );
    assert.ok(
      Math.abs(
        Math.exp((s.nll as number) / (s.tokens as number)) - (s.ppl as number),
      ) < 1e-9 * (s.ppl as number),
    );
  }

  const cases = ref.tokenization as Record<string, unknown>[];
  assert.ok(cases.length >= 10);
  assert.ok(cases.some((c) => c.text === ""), "the empty string is a case");
  for (const c of cases) {
    const list = c.ids as number[];
    assert.equal(list[0], 1, `BOS first for ${JSON.stringify(c.text)}`);
    assert.deepEqual(list.slice(1), c.ids_no_special);
    for (const id of list) assert.ok(id >= 0 && id < vocab);
  }
});

Deno.test("model fixtures: chat template cases are well-formed", () => {
  const ref = readJson(join(DIR, "chat_template.json"));
  const config = ref.tokenizer_config as Record<string, unknown>;
  assert.equal(typeof config.chat_template, "string");
  const cases = ref.cases as Record<string, unknown>[];
  assert.ok(cases.length >= 3);
  for (const c of cases) {
    assert.ok(Array.isArray(c.messages) && c.messages.length > 0);
    assert.equal(typeof c.text, "string");
    assert.ok((c.text as string).startsWith(config.bos_token as string));
    assert.equal(
      (c.text as string).endsWith("<|im_start|>assistant\n"),
      c.add_generation_prompt,
    );
  }
});
