import assert from "node:assert/strict";
import { join } from "node:path";
import { makeDemoCheckpoint } from "../src/demo/demo_checkpoint.ts";
import { Checkpoint } from "../src/io/checkpoint.ts";
import { runMain, snapshot, withDir } from "./_checkpoint_fixtures.ts";
import {
  compareFloatCheckpoints,
  formatFloatCompare,
} from "../src/cli/eval_float.ts";
import { evaluateCheckpoints, formatEval } from "../src/cli/eval.ts";

Deno.test("makeDemoCheckpoint's default MLP size is the 680 its JSDoc says", async () => {
  await withDir(async (dir) => {
    await makeDemoCheckpoint(dir, { layers: 1, vocab: 16 });
    const config = JSON.parse(
      await Deno.readTextFile(join(dir, "config.json")),
    );
    assert.equal(config.hidden_size, 256);
    assert.equal(config.intermediate_size, 680);
    const src = await Deno.readTextFile(
      new URL("../src/demo/demo_checkpoint.ts", import.meta.url),
    );
    assert.match(
      src,
      /MLP size \(default 8\/3 × hidden rounded to a multiple of 8: 680/,
    );
    assert.doesNotMatch(src, /688/);
  });
});

Deno.test("inspect on tinyq and quanto outputs shows an excluded lm_head as exclude, stored in float", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, { layers: 1, hidden: 16, vocab: 32 });
    for (const format of ["tinyq", "quanto"]) {
      const q = join(dir, format);
      let r = await runMain([
        "quantize",
        m,
        "-o",
        q,
        "-x",
        "lm_head",
        "--format",
        format,
      ]);
      assert.equal(r.code, 0, r.stderr);
      r = await runMain(["inspect", q]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        r.stdout,
        /^lm_head\.weight .* exclude +excluded when quantized \(.*\), stored in float$/m,
        format,
      );
      assert.doesNotMatch(r.stdout, / quantize +/, format);
      r = await runMain(["inspect", q, "--json"]);
      const tensors: { name: string; action: string }[] =
        JSON.parse(r.stdout).tensors;
      assert.equal(
        tensors.find((t) => t.name === "lm_head.weight")?.action,
        "exclude",
      );
      assert.ok(tensors.every((t) => t.action !== "quantize"), format);
    }
  });
});

Deno.test("compressed-tensors export of a tied-embedding model lists lm_head in ignore", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, {
      layers: 1,
      hidden: 16,
      vocab: 32,
      tieEmbeddings: true,
    });
    const q = join(dir, "q");
    const r = await runMain([
      "quantize",
      m,
      "-o",
      q,
      "--format",
      "compressed-tensors",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const qc = JSON.parse(await Deno.readTextFile(join(q, "config.json")))
      .quantization_config;
    assert.deepEqual(qc.ignore, ["lm_head"]);
    using c = await Checkpoint.open(q);
    assert.equal(
      c.entry("lm_head.weight"),
      undefined,
      "tied: no lm_head tensor",
    );
  });
});

Deno.test("compressed-tensors: an exact --exclude splitting q/k/v or gate/up is an error; a glob excludes the whole group and says so; --force-mixed writes it", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, { layers: 2, hidden: 16, vocab: 32 });
    const before = await snapshot(dir);
    let r = await runMain([
      "quantize",
      m,
      "-o",
      join(dir, "a"),
      "--format",
      "compressed-tensors",
      "-x",
      "q_proj",
    ]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /--exclude leaves model\.layers\.0\.self_attn split: q_proj in float but k_proj, v_proj quantized; vLLM fuses q_proj\/k_proj\/v_proj and refuses a mixed group at load\. Exclude k_proj, v_proj too, or name a member with a glob \(--exclude '\*\*\.q_proj'\) to exclude each whole group, or pass --force-mixed to write it anyway\n$/,
    );
    assert.deepEqual(await snapshot(dir), before, "nothing written");
    r = await runMain([
      "quantize",
      m,
      "-o",
      join(dir, "b"),
      "--format",
      "compressed-tensors",
      "-x",
      "**.q_proj",
      "-x",
      "model.layers.1.mlp.gate_*",
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /^tinyq: note: --exclude \*\*\.q_proj names q_proj in 2 q_proj\/k_proj\/v_proj group\(s\); vLLM fuses them into one layer with one scheme, so k_proj, v_proj are excluded too$/m,
    );
    assert.match(
      r.stderr,
      /^tinyq: note: --exclude model\.layers\.1\.mlp\.gate_\* names gate_proj in 1 gate_proj\/up_proj group\(s\); .* so up_proj is excluded too$/m,
    );
    const j = JSON.parse(r.stdout);
    for (const p of ["q_proj", "k_proj", "v_proj"]) {
      assert.ok(j.excluded.includes(`model.layers.0.self_attn.${p}`), p);
      assert.ok(j.excluded.includes(`model.layers.1.self_attn.${p}`), p);
    }
    assert.ok(j.excluded.includes("model.layers.1.mlp.up_proj"));
    assert.ok(j.quantized.includes("model.layers.0.mlp.up_proj"));
    assert.deepEqual(
      j.warnings.filter((w: { message: string }) => /fuses/.test(w.message)),
      [],
    );
    r = await runMain([
      "quantize",
      m,
      "-o",
      join(dir, "c"),
      "--format",
      "compressed-tensors",
      "-x",
      "q_proj",
      "--force-mixed",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /warning: model\.layers\.0\.self_attn: k_proj, v_proj quantized but q_proj in float; vLLM fuses/,
    );
    // The tinyq format has no such constraint: an exact name is fine.
    r = await runMain(["quantize", m, "-o", join(dir, "d"), "-x", "q_proj"]);
    assert.equal(r.code, 0, r.stderr);
  });
});

Deno.test("dequantize --dtype f32 converts every float tensor and sets config.json torch_dtype", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, { layers: 1, hidden: 16, vocab: 32 });
    let r = await runMain([
      "quantize",
      m,
      "-o",
      join(dir, "q"),
      "-x",
      "lm_head",
    ]);
    assert.equal(r.code, 0, r.stderr);
    r = await runMain([
      "dequantize",
      join(dir, "q"),
      "-o",
      join(dir, "d"),
      "--dtype",
      "f32",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /others: +\d+ float tensor\(s\) converted to f32/);
    using d = await Checkpoint.open(join(dir, "d"));
    using orig = await Checkpoint.open(m);
    for (const e of d.entries) assert.equal(e.info.dtype, "f32", e.name);
    assert.deepEqual(
      d.entries.map((e) => e.name).sort(),
      orig.entries.map((e) => e.name).sort(),
    );
    // Converted exactly: bf16 → f32 is lossless.
    const norm = await d.read("model.norm.weight");
    assert.deepEqual([...norm.data], [
      ...(await orig.read("model.norm.weight")).toF32Array(),
    ]);
    const config = JSON.parse(
      await Deno.readTextFile(join(dir, "d", "config.json")),
    );
    assert.equal(config.torch_dtype, "float32");
    assert.equal(config.quantization_config, undefined);
    // Without --dtype: weights back in bf16, other tensors untouched, torch_dtype kept.
    r = await runMain(["dequantize", join(dir, "q"), "-o", join(dir, "e")]);
    assert.equal(r.code, 0, r.stderr);
    using e = await Checkpoint.open(join(dir, "e"));
    for (const t of e.entries) assert.equal(t.info.dtype, "bf16", t.name);
    assert.equal(
      JSON.parse(await Deno.readTextFile(join(dir, "e", "config.json")))
        .torch_dtype,
      "bfloat16",
    );
  });
});

Deno.test("eval A B on two float checkpoints compares them tensor by tensor, in 80 columns", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "model");
    await makeDemoCheckpoint(m, { layers: 1, hidden: 16, vocab: 32 });
    let r = await runMain(["quantize", m, "-o", join(dir, "q")]);
    r = await runMain([
      "dequantize",
      join(dir, "q"),
      "-o",
      join(dir, "d"),
      "--dtype",
      "f32",
    ]);
    assert.equal(r.code, 0, r.stderr);
    r = await runMain(["eval", m, join(dir, "d")]);
    assert.equal(r.code, 0, r.stderr);
    // The CLI fits the terminal (100 columns here); the formatter any width.
    for (const line of r.stdout.split("\n")) {
      assert.ok(line.length <= 100, line);
    }
    const report = await compareFloatCheckpoints(m, join(dir, "d"));
    for (const line of formatFloatCompare(report, 80).split("\n")) {
      assert.ok(line.length <= 80, line);
    }
    assert.match(r.stdout, /^tensor +shape +dtypes +max\|d\| +SNR dB +cos$/m);
    assert.match(
      r.stdout,
      /mlp\.up_proj\.weight +\[\d+, 16\] +bf16\/f32 +\d\.\d\de-\d +\d+\.\d +0\.99\d+$/m,
    );
    assert.match(
      r.stdout.replaceAll("\n  ", " "),
      /verdict: CLOSE: of 12 tensors 0 byte-identical, 4 the same values in another dtype; the other 8 within \d+\.\d dB SNR or better\n$/,
    );
    // A tensor missing from one side, and one of another shape: DIFFER, exit 1.
    const other = join(dir, "other");
    await makeDemoCheckpoint(other, { layers: 1, hidden: 16, vocab: 48 });
    r = await runMain(["eval", m, other, "--json"]);
    assert.equal(r.code, 1);
    const j = JSON.parse(r.stdout);
    assert.equal(j.verdict, "differ");
    assert.ok(
      j.differ.some((d: { problem: string | null }) =>
        /^shape \[32, 16\] vs \[48, 16\]$/.test(d.problem ?? "")
      ),
    );
  });
});

Deno.test("eval A B shows a progress bar on a terminal, and its table fits 80 columns", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, { layers: 2, hidden: 16, vocab: 32 });
    await runMain(["quantize", m, "-o", join(dir, "q")]);
    const r = await runMain(["eval", m, join(dir, "q")], true);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stderr.startsWith("\r\x1b[2Keval ["), JSON.stringify(r.stderr));
    assert.match(r.stderr, /eval \[#+-*\] +\d+% +\d+\/15 layers/);
    assert.match(r.stderr, /15\/15 layers/);
    const wide = r.stdout.split("\n").filter((l) => l.length > 100);
    assert.deepEqual(wide, []);
    const report = await evaluateCheckpoints(m, join(dir, "q"));
    const narrow = formatEval(report, 80).split("\n").filter((l) =>
      l.length > 80
    );
    assert.deepEqual(narrow, []);
    assert.match(formatEval(report, 80), /^…\S*self_attn\.q_proj +\[16, 16\]/m);
  });
});

Deno.test("without env permission nothing prints 'XDG_RUNTIME_DIR is invalid'; the backend line says why WebGPU was not probed", async () => {
  const cli = new URL("../cli.ts", import.meta.url).pathname;
  const model =
    new URL("./fixtures/pytorch/llama_bin", import.meta.url).pathname;
  const env: Record<string, string> = { NO_COLOR: "1" };
  for (const k of ["HOME", "PATH", "DENO_DIR"]) {
    const v = Deno.env.get(k);
    if (v) env[k] = v;
  }
  for (const perms of [["--allow-read", "--allow-write"], ["-A"]]) {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...perms, cli, "inspect", model],
      clearEnv: true,
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(r.stderr);
    const out = new TextDecoder().decode(r.stdout);
    assert.equal(r.code, 0, err);
    assert.doesNotMatch(err, /XDG_RUNTIME_DIR/, perms.join(" "));
    assert.equal(err, "", perms.join(" "));
    if (perms[0] !== "-A") {
      assert.match(
        out,
        /^backend: +cpu \(WebGPU not probed: without env permission/m,
      );
    }
  }
});
