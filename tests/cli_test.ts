import assert from "node:assert/strict";
import { join } from "node:path";
import { makeDemoCheckpoint } from "../src/demo/demo_checkpoint.ts";
import { Checkpoint } from "../src/io/checkpoint.ts";
import { SafetensorsFile } from "../src/io/safetensors.ts";
import { FORMATS } from "../src/io/formats/registry.ts";
import { renderProgress } from "../src/cli/progress.ts";
import { formatTable } from "../src/cli/tables.ts";
import { runCli, runMain, writeFamily } from "./_checkpoint_fixtures.ts";

async function withModel(
  fn: (dir: string, model: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tinyq-cli-test-" });
  try {
    const model = join(dir, "model");
    await makeDemoCheckpoint(model, { layers: 1, hidden: 16, vocab: 32 });
    await fn(dir, model);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("--help of tinyq and of each command prints usage and exits 0", async () => {
  let r = await runMain(["--help"]);
  assert.equal(r.code, 0);
  assert.match(
    r.stdout,
    /^tinyq \d+\.\d+\.\d+ — 8-bit and 4-bit weight quantization/,
  );
  for (
    const c of [
      "quantize",
      "inspect",
      "dequantize",
      "eval",
      "demo",
      "generate",
      "perplexity",
    ]
  ) {
    r = await runMain([c, "--help"]);
    assert.equal(r.code, 0, c);
    assert.match(r.stdout, new RegExp(`^Usage: tinyq ${c}`), c);
    assert.equal((await runMain([c, "-h"])).stdout, r.stdout);
  }
  r = await runMain([]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /Usage: tinyq <command>/);
  r = await runMain(["--version"]);
  assert.match(r.stdout, /^tinyq \d+\.\d+\.\d+\n$/);
});

Deno.test("usage errors exit 2 with one exact line", async () => {
  const cases: [string[], string][] = [
    [
      ["frob"],
      'tinyq: unknown command "frob" (commands: quantize, inspect, dequantize, eval, demo, generate, perplexity; see tinyq --help)',
    ],
    [
      ["quantize"],
      "tinyq quantize: missing <input> (a model folder or .safetensors file) (see tinyq quantize --help)",
    ],
    [
      ["quantize", "m"],
      "tinyq quantize: missing --out <path> (see tinyq quantize --help)",
    ],
    [
      ["quantize", "m", "--out"],
      "tinyq quantize: Option '-o, --out <value>' argument missing (see tinyq quantize --help)",
    ],
    [
      ["quantize", "m", "--out", "o", "--bogus"],
      "tinyq quantize: Unknown option '--bogus' (see tinyq quantize --help)",
    ],
    [
      ["quantize", "a", "b", "--out", "o"],
      'tinyq quantize: unexpected argument "b" (see tinyq quantize --help)',
    ],
    [
      ["quantize", "m", "--out", "o", "--method", "w4"],
      'tinyq quantize: unknown --method "w4"; expected w8a16, w8a32, w8a8 or w4a16 (see tinyq quantize --help)',
    ],
    [
      ["quantize", "m", "--out", "o", "--max-shard-size", "lots"],
      'tinyq quantize: invalid --max-shard-size "lots"; expected a size such as 2GB, 500MB or 1GiB (see tinyq quantize --help)',
    ],
    [
      ["quantize", "m", "--out", "o", "--exclude", ""],
      "tinyq quantize: --exclude needs a module name or glob (see tinyq quantize --help)",
    ],
    [
      ["quantize", "m", "--out", "o", "--format", "gguf"],
      `tinyq quantize: unknown --format "gguf"; known formats: ${
        FORMATS.map((f) => f.name).join(", ")
      } (see tinyq quantize --help)`,
    ],
    [
      ["inspect"],
      "tinyq inspect: missing <input> (a model folder or .safetensors file) (see tinyq inspect --help)",
    ],
    [
      ["dequantize", "q", "--out", "o", "--dtype", "f8"],
      'tinyq dequantize: unknown --dtype "f8"; expected f32, f16 or bf16 (see tinyq dequantize --help)',
    ],
    [
      ["eval"],
      "tinyq eval: missing <original> checkpoint (and a <quantized> one to compare with it) (see tinyq eval --help)",
    ],
    [
      ["eval", "a", "b", "--backend", "gpu"],
      'tinyq eval: Unknown backend "gpu" in --backend: expected one of auto, cpu, webgpu (see tinyq eval --help)',
    ],
    [
      ["eval", "a", "b", "--tokens", "0"],
      'tinyq eval: --tokens must be an integer >= 1, got "0" (see tinyq eval --help)',
    ],
    [
      ["demo", "extra"],
      'tinyq demo: unexpected argument "extra" (see tinyq demo --help)',
    ],
  ];
  for (const [args, line] of cases) {
    const r = await runMain(args);
    assert.equal(r.stderr, line + "\n", args.join(" "));
    assert.equal(r.code, 2, args.join(" "));
    assert.equal(r.stdout, "");
  }
});

Deno.test("quantize prints a llama.cpp-style summary, or JSON with --json, and nothing on stderr in a pipe", async () => {
  await withModel(async (dir, model) => {
    let r = await runMain([
      "quantize",
      model,
      "--out",
      join(dir, "q"),
      "-x",
      "lm_head",
    ]);
    assert.equal(r.code, 0);
    assert.equal(r.stderr, "");
    assert.match(r.stdout, /^tinyq: quantized .* -> .*\/q\n/);
    assert.match(
      r.stdout,
      /layers: +7 Linear layers quantized \(w8a16, int8 per-channel symmetric\), 1 excluded \(lm_head\), 5 tensors kept as is/,
    );
    assert.match(r.stdout, /model size: +0\.01 MiB \(16\.00 BPW\)/);
    assert.match(r.stdout, /quant size: +0\.01 MiB \(\d+\.\d\d BPW\)/);
    assert.match(
      r.stdout,
      /Linear weights: .* \(16\.00 -> \d+\.\d\d bits per weight, scales included\)/,
    );
    assert.match(r.stdout, /time: .*MB\/s\)/);
    r = await runMain([
      "quantize",
      model,
      "--out",
      join(dir, "q2"),
      "--json",
      "--method",
      "W8A32",
    ]);
    assert.equal(r.code, 0);
    const j = JSON.parse(r.stdout);
    assert.equal(j.method, "w8a32");
    assert.equal(j.quantized.length, 8);
    assert.equal(j.family, "llama");
    assert.equal(j.bitsPerWeightBefore, 16);
    assert.ok(j.bitsPerWeightAfter < 16);
    assert.ok(j.megabytesPerSecond > 0);
  });
});

Deno.test("quantize --verbose prints one line per tensor when stderr is not a terminal", async () => {
  await withModel(async (dir, model) => {
    const r = await runMain([
      "quantize",
      model,
      "--out",
      join(dir, "q"),
      "--verbose",
      "-x",
      "lm_head",
    ]);
    assert.equal(r.code, 0);
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 12);
    assert.ok(
      lines.includes(
        "[ 1/12] lm_head.weight - [32, 16], type = bf16, excluded, size = 0.00 MiB",
      ),
      lines.join("\n"),
    );
    assert.ok(
      lines.some((l) =>
        /^\[ ?\d+\/12\] model\.layers\.0\.mlp\.up_proj\.weight - \[40, 16\], type = bf16, converting to i8 \.\. size = 0\.00 MiB -> 0\.00 MiB$/
          .test(l)
      ),
      lines.join("\n"),
    );
    assert.ok(
      lines.some((l) =>
        /model\.norm\.weight - \[16\], type = bf16, size = 0\.00 MiB$/.test(l)
      ),
    );
    assert.ok(!r.stderr.includes("\r"));
  });
});

Deno.test("on a terminal, quantize redraws a progress bar with \\r and clears it", async () => {
  await withModel(async (dir, model) => {
    const r = await runMain(["quantize", model, "--out", join(dir, "q")], true);
    assert.equal(r.code, 0);
    assert.match(
      r.stderr,
      new RegExp(
        "\r\u001b\\[2Kquantize \\[#+\\] 100% +8/8 layers +0/0 MiB +\\d+ MB/s +ETA 00:00",
      ),
    );
    assert.ok(r.stderr.endsWith("\r\x1b[2K"), "the bar is cleared at the end");
  });
});

Deno.test("renderProgress() shows percent, layers, MiB, speed and ETA within the width", () => {
  const line = renderProgress(
    "quantize",
    {
      bytesDone: 512 * 2 ** 20,
      bytesTotal: 1024 * 2 ** 20,
      layersDone: 10,
      layersTotal: 20,
    },
    1,
    100,
  );
  assert.match(
    line,
    /^quantize \[#{10,}-{10,}\] {2}50% {2}10\/20 layers {2}512\/1024 MiB {2}537 MB\/s {2}ETA 00:01$/,
  );
  assert.ok(
    renderProgress(
      "q",
      { bytesDone: 0, bytesTotal: 10, layersDone: 0, layersTotal: 1 },
      0,
      30,
    ).length < 30,
  );
});

Deno.test("formatTable() aligns columns", () => {
  assert.equal(
    formatTable(["name", "MiB"], [["a", "1.00"], ["bb", "10.00"]], [
      "left",
      "right",
    ]),
    "name    MiB\na      1.00\nbb    10.00\n",
  );
});

Deno.test("inspect lists tensors with what quantize would do and why, and the backend", async () => {
  await withModel(async (dir, model) => {
    let r = await runMain(["inspect", model, "-x", "lm_head"]);
    assert.equal(r.code, 0);
    assert.match(
      r.stdout,
      /^.*model: folder, 2 shard\(s\), 12 tensors, 7\.3\d KiB\n/,
    );
    assert.match(
      r.stdout,
      /\nfamily: +llama \(config\.json model_type "llama"\)\n/,
    );
    assert.match(r.stdout, /\nquantization: none \(float checkpoint\)\n/);
    assert.match(r.stdout, /\nbackend: +(cpu|webgpu) \(.+\)\n/);
    assert.match(
      r.stdout,
      /model\.layers\.0\.self_attn\.q_proj\.weight +BF16 +\[16, 16\] +512 B +quantize +llama table: self_attn\.q_proj\n/,
    );
    assert.match(
      r.stdout,
      /lm_head\.weight +BF16 +\[32, 16\] +1\.00 KiB +exclude +matched --exclude\n/,
    );
    assert.match(
      r.stdout,
      /model\.norm\.weight +BF16 +\[16\] +32 B +keep +1-D tensor\n/,
    );
    assert.match(
      r.stdout,
      /model\.embed_tokens\.weight .* keep +not a Linear of the llama table\n/,
    );
    assert.match(
      r.stdout,
      /quantize would convert 7 Linear weights .*, exclude 1, keep 4 tensors as they are\n$/,
    );

    r = await runMain(["inspect", model, "--json"]);
    const j = JSON.parse(r.stdout);
    assert.equal(j.family, "llama");
    assert.equal(j.tensors.length, 12);
    assert.deepEqual(
      j.tensors.find((t: { name: string }) => t.name === "lm_head.weight"),
      {
        name: "lm_head.weight",
        dtype: "BF16",
        shape: [32, 16],
        bytes: 1024,
        shard: "model-00001-of-00002.safetensors",
        action: "quantize",
        reason: "llama table: lm_head",
      },
    );
    assert.equal(j.summary.quantize, 8);
    assert.ok(
      typeof j.backend.reason === "string" && j.backend.reason.length > 0,
    );

    assert.equal(
      (await runMain(["quantize", model, "--out", join(dir, "q")])).code,
      0,
    );
    r = await runMain(["inspect", join(dir, "q")]);
    assert.match(
      r.stdout,
      /\nquantization: tinyq \d+\.\d+\.\d+, w8a16, 8-bit per-channel symmetric, activations f16\/bf16, 8 modules quantized, 0 excluded, original weights bf16\n/,
    );
    assert.match(
      r.stdout,
      /model\.layers\.0\.mlp\.up_proj\.int8_weights +I8 +\[40, 16\] +640 B +quantized +quantized \(tinyq w8a16\)\n/,
    );
    j.quantization =
      JSON.parse((await runMain(["inspect", join(dir, "q"), "--json"])).stdout)
        .quantization;
    assert.equal(j.quantization.modules.length, 8);
  });
});

Deno.test("eval reports per-layer errors, the backend and a PASS verdict; a changed tensor FAILs with exit 1", async () => {
  await withModel(async (dir, model) => {
    const q = join(dir, "q");
    assert.equal(
      (await runMain(["quantize", model, "--out", q, "-x", "lm_head"])).code,
      0,
    );
    let r = await runMain(["eval", model, q, "--backend", "cpu"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /\nbackend: cpu \(CPU kernels requested \(--backend cpu\).*\)\n/,
    );
    assert.match(
      r.stdout,
      /layer +shape +max\|dW\| +RMSE\(W\) +SNR\(W\) dB +cos\(W\) +SNR\(y\) dB +cos\(y\)\n/,
    );
    assert.match(
      r.stdout,
      /model\.layers\.0\.mlp\.down_proj +\[16, 40\] +\d\.\d\de-\d +\d\.\d\de-\d +\d+\.\d +0\.9\d+ +\d+\.\d +0\.9\d+\n/,
    );
    assert.match(
      r.stdout,
      /\nverdict: PASS: 7 layers, worst output SNR \d+\.\d dB \(.+\); 5 other tensors byte-identical — int8 per-channel error as expected\n$/,
    );

    r = await runMain([
      "eval",
      model,
      q,
      "--json",
      "--backend",
      "cpu",
      "--seed",
      "3",
      "--tokens",
      "2",
    ]);
    const j = JSON.parse(r.stdout);
    assert.equal(j.verdict, "pass");
    assert.equal(j.layers.length, 7);
    for (const l of j.layers) {
      assert.ok(l.weight.snrDb > 30 && l.weight.cosine > 0.999, l.path);
      assert.ok(l.output.snrDb > 30, l.path);
    }
    assert.equal(j.identical, 5);

    // Tamper with a pass-through tensor of the quantized checkpoint.
    const shard = join(q, "model-00002-of-00002.safetensors");
    let offset: number;
    {
      using f = await SafetensorsFile.open(shard);
      offset = f.get("model.norm.weight")!.byteOffset;
    }
    const bytes = await Deno.readFile(shard);
    bytes[offset] ^= 1;
    await Deno.writeFile(shard, bytes);
    r = await runMain(["eval", model, q, "--backend", "cpu"]);
    assert.equal(r.code, 1);
    assert.match(
      r.stdout,
      /\nverdict: FAIL: 1 tensor\(s\) that should pass through unchanged differ: model\.norm\.weight \(bytes differ\)\n$/,
    );

    r = await runMain(["eval", model, model]);
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `tinyq eval: error: ${model}: is not a TinyQ-quantized checkpoint (no quantization metadata)\n`,
    );
  });
});

Deno.test("dequantize restores a float checkpoint without quantization records", async () => {
  await withModel(async (dir, model) => {
    const q = join(dir, "q");
    assert.equal((await runMain(["quantize", model, "--out", q])).code, 0);
    const r = await runMain([
      "dequantize",
      q,
      "--out",
      join(dir, "f"),
      "--dtype",
      "f16",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /^tinyq: dequantized .* -> .*\n {2}layers: +8 restored to f16\n/,
    );
    using back = await Checkpoint.open(join(dir, "f"));
    assert.equal(back.quantization, null);
    assert.equal(back.entry("lm_head.weight")!.info.dtype, "f16");
    assert.equal(back.entry("model.norm.weight")!.info.dtype, "bf16");
    assert.equal(
      JSON.parse(await Deno.readTextFile(join(dir, "f", "config.json")))
        .quantization_config,
      undefined,
    );
    const again = await runMain([
      "quantize",
      join(dir, "f"),
      "--out",
      join(dir, "q2"),
    ]);
    assert.equal(again.code, 0, "a dequantized checkpoint quantizes again");
  });
});

Deno.test("every family fixture goes through quantize, eval and dequantize on the command line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tinyq-cli-test-" });
  try {
    for (const family of ["gpt2", "bert", "phi3", "qwen2"]) {
      const m = join(dir, family);
      await writeFamily(m, family);
      assert.equal(
        (await runMain(["quantize", m, "--out", `${m}-q`])).code,
        0,
        family,
      );
      const e = await runMain([
        "eval",
        m,
        `${m}-q`,
        "--backend",
        "cpu",
        "--json",
      ]);
      assert.equal(JSON.parse(e.stdout).verdict, "pass", family);
      assert.equal(
        (await runMain(["dequantize", `${m}-q`, "--out", `${m}-f`])).code,
        0,
        family,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the real program: exit 0/1/2, one error line without a stack trace unless --verbose", async () => {
  await withModel(async (dir, model) => {
    let r = await runCli(["quantize", model, "--out", join(dir, "q")]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^tinyq: quantized /);
    assert.equal(r.stderr, "", "quiet in a pipe");
    r = await runCli([
      "quantize",
      join(dir, "missing"),
      "--out",
      join(dir, "x"),
    ]);
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `tinyq quantize: error: ${dir}/missing: no such file or folder\n`,
    );
    r = await runCli([
      "quantize",
      join(dir, "missing"),
      "--out",
      join(dir, "x"),
      "--verbose",
    ]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^tinyq quantize: error: .*missing: no such file or folder\nCheckpointError: .*\n {4}at /,
    );
    r = await runCli(["quantize", model]);
    assert.equal(r.code, 2);
    assert.equal(
      r.stderr,
      "tinyq quantize: missing --out <path> (see tinyq quantize --help)\n",
    );
  });
});
