import assert from "node:assert/strict";
import { join } from "node:path";
import { makeDemoCheckpoint } from "../src/demo/demo_checkpoint.ts";
import { runMain, snapshot, withDir } from "./_checkpoint_fixtures.ts";

Deno.test("quantize --dry-run prints the plan, sizes, files and warnings and writes nothing", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, {
      layers: 2,
      hidden: 64,
      intermediate: 96,
      vocab: 32,
    });
    await Deno.writeTextFile(join(m, "tokenizer.json"), "{}");
    const before = await snapshot(dir);
    const out = join(dir, "q");
    let r = await runMain([
      "quantize",
      m,
      "-o",
      out,
      "--dry-run",
      "-m",
      "w4a16",
      "-g",
      "64",
      "-x",
      "lm_head",
      "--max-shard-size",
      "20KB",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await snapshot(dir), before, "nothing written anywhere");
    assert.equal(await Deno.stat(out).then(() => true, () => false), false);
    const text = r.stdout;
    assert.match(
      text,
      /^tinyq: dry run, nothing written: quantize .* -> .*\/q\n/,
    );
    assert.match(
      text,
      / {2}quantize: +12 Linear layer\(s\) \(w4a16, 4-bit group 64 symmetric\)\n/,
    );
    assert.match(text, / {4}model\.layers\.1\.self_attn\.q_proj\n/);
    assert.match(text, / {4}lm_head \(matched --exclude\)\n/);
    assert.match(
      text,
      / {4}model\.layers\.0\.mlp\.down_proj \(its 96 inputs are not a multiple of the 4-bit group size 64; --group-size 32 would fit it\)\n/,
    );
    assert.match(
      text,
      / {2}output: +.*\(tinyq format\): model-00001-of-0000\d\.safetensors, .*model\.safetensors\.index\.json, config\.json\n/,
    );
    assert.match(text, / {2}copy: +.*tokenizer\.json\n/);
    // --json gives the same plan, and the shard names the real run writes.
    r = await runMain([
      "quantize",
      m,
      "-o",
      out,
      "-n",
      "--json",
      "-x",
      "lm_head",
    ]);
    const plan = JSON.parse(r.stdout);
    assert.equal(plan.dryRun, true);
    assert.equal(plan.outputExists, false);
    assert.deepEqual(await snapshot(dir), before);
    r = await runMain(["quantize", m, "-o", out, "--json", "-x", "lm_head"]);
    assert.equal(r.code, 0, r.stderr);
    const done = JSON.parse(r.stdout);
    for (
      const k of [
        "quantized",
        "excluded",
        "shards",
        "copied",
        "outputBytes",
        "warnings",
      ]
    ) {
      assert.deepEqual(plan[k], done[k], k);
    }
    // With the output present: a note, and still nothing touched.
    const after = await snapshot(dir);
    r = await runMain(["quantize", m, "-o", out, "-n"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /exists; the real run needs --force/);
    assert.deepEqual(await snapshot(dir), after);
  });
});

Deno.test("quantize --dry-run shows a format's warnings and kept-float layers", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, { layers: 1, hidden: 16, vocab: 32 });
    const r = await runMain([
      "quantize",
      m,
      "-o",
      join(dir, "q"),
      "-n",
      "--format",
      "compressed-tensors",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, / {4}lm_head \(.*\)\n/);
    assert.match(r.stdout, / {2}warning: +/);
    assert.deepEqual(
      [...(await snapshot(dir)).keys()].every((k) => k.startsWith("m/")),
      true,
    );
  });
});
