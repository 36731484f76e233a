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
