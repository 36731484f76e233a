import assert from "node:assert/strict";

Deno.test("deno task demo: tree, float text, quantize, tree with W8A16 layers, quantized text, per-scheme perplexity", async () => {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "demo"],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
    env: { TINYQ_BACKEND: "cpu", NO_COLOR: "1" },
  }).output();
  const out = new TextDecoder().decode(r.stdout);
  assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
  // the five steps, in order
  let at = -1;
  for (const n of [1, 2, 3, 4, 5]) {
    const i = out.indexOf(`${n}. `, at + 1);
    assert.ok(i > at, `step ${n}`);
    at = i;
  }
  assert.match(
    out,
    /^1\. Load models\/tinystories-656k \(llama, bf16, 1\.25 MiB of tensors\)/,
  );
  const [float, quantized] = out.split("\n3. ");
  assert.match(
    float!,
    /\(q_proj\): Linear\(in_features=128, out_features=128, bias=False\)/,
  );
  assert.doesNotMatch(float!, /W8A16LinearLayer/);
  // the float model's greedy text is transformers' (tests/generate_cli_test.ts pins all of it)
  assert.match(
    float!,
    /\nOnce upon a time, a little girl named Lily lived in a small house/,
  );
  assert.match(
    quantized!,
    /^Quantize in memory: await new Quantizer\(lm\.model\)\.quantize\("w8a16", \["lm_head"\]\)\n {3}14 Linear layers quantized \(w8a16\); lm_head left in float/,
  );
  assert.match(
    quantized!,
    /\(q_proj\): W8A16LinearLayer\(in_features=128, out_features=128, bias=False\)/,
  );
  assert.match(
    quantized!,
    /\(down_proj\): W8A16LinearLayer\(in_features=384, out_features=128, bias=False\)/,
  );
  assert.match(
    quantized!,
    /\n4\. Generate from the quantized model:\n\nOnce upon a time, \S+/,
  );
  const table = out.slice(out.indexOf("\nscheme "));
  assert.match(table, /\nfloat +16\.882 +— +— +—\n/);
  for (
    const s of [
      "w8a32",
      "w8a16",
      "w8a16-asym",
      "w8a8",
      "w4a16-g128",
      "w4a16-g128-asym",
      "w4a16-g32",
      "w4a16-g32-asym",
    ]
  ) {
    assert.match(
      table,
      new RegExp(
        `\\n${s} +\\d+\\.\\d{3} +[+-]\\d+\\.\\d{3} +\\d\\.\\d{5} +\\d+\\.\\d%`,
      ),
      s,
    );
  }
});

const ROOT = new URL("..", import.meta.url).pathname;

function tinyq(...args: string[]): Promise<Deno.CommandOutput> {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}cli.ts`, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { TINYQ_BACKEND: "cpu", NO_COLOR: "1" },
  }).output();
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("tinyq demo --out saves a checkpoint that generates the demo's quantized text; an existing --out is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tinyq-demo-test-" });
  try {
    const out = `${dir}/q`;
    const r = await tinyq("demo", "--out", out);
    const stdout = text(r.stdout);
    assert.equal(r.code, 0, text(r.stderr));
    assert.ok(
      stdout.endsWith(
        `\n6. Saved the quantized model to ${out} (907.3 KiB of tensors); run it: tinyq generate ${out} --prompt 'Once upon a time' --temperature 0\n`,
      ),
      stdout.slice(-300),
    );
    const quantized =
      /\n4\. Generate from the quantized model:\n\n([^]*?)\n {2}\[6 prompt tokens, 40 new/
        .exec(stdout)![1]!;
    const g = await tinyq(
      "generate",
      out,
      "--prompt",
      "Once upon a time",
      "--temperature",
      "0",
      "-n",
      "40",
    );
    assert.equal(g.code, 0, text(g.stderr));
    assert.equal(text(g.stdout), quantized + "\n");
    const names = [...Deno.readDirSync(out)].map((e) => e.name).sort();
    for (const f of ["config.json", "model.safetensors", "tokenizer.json"]) {
      assert.ok(names.includes(f), `${f} in ${names}`);
    }
    const config = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
    assert.equal(config.quantization_config.quant_method, "tinyq");
    const i = await tinyq("inspect", out);
    assert.equal(i.code, 0, text(i.stderr));
    assert.match(text(i.stdout), /w8a16, .*14 modules quantized/);

    // Refused at once, before the demo's work, and nothing changes.
    const before = await Deno.readFile(`${out}/model.safetensors`);
    const again = await tinyq("demo", "--out", out);
    assert.equal(again.code, 1);
    assert.equal(text(again.stdout), "");
    assert.equal(
      text(again.stderr),
      `tinyq demo: error: ${out}: already exists (use --force to replace it)\n`,
    );
    assert.deepEqual(await Deno.readFile(`${out}/model.safetensors`), before);
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name),
      ["q"],
      "no temporary output or lock left",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tinyq demo --help mentions --out and --force", async () => {
  const r = await tinyq("demo", "--help");
  assert.equal(r.code, 0);
  assert.match(
    text(r.stdout),
    /\n {2}-o, --out <dir> +save the quantized model/,
  );
  assert.match(
    text(r.stdout),
    /\n {2}-f, --force +replace a previous TinyQ output/,
  );
});
