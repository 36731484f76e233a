/**
 * The silent surprises of issue 14 (cases 8 and 9): zero-sized weights,
 * excludes that match nothing, repeated and dash-leading flags, format and
 * method pairs, escape sequences in tensor names, a model quantized twice,
 * weights changed after a forward.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  makeDemoCheckpoint,
  writeSyntheticCheckpoint,
} from "../src/demo/demo_checkpoint.ts";
import { Checkpoint } from "../src/io/checkpoint.ts";
import {
  Linear,
  Module,
  Quantizer,
  setBackend,
  Tensor,
  W8A16LinearLayer,
  W8A32LinearLayer,
} from "../mod.ts";
import { escapeControls } from "../src/cli/_safe_io.ts";
import { runMain, withDir } from "./_checkpoint_fixtures.ts";
import { tinyq, tree } from "./_nothing_lost_helpers.ts";
import { floats } from "./_random.ts";

setBackend("cpu");

// Raw control characters (what must never reach the terminal).
// deno-lint-ignore no-control-regex
const RAW = new RegExp("[\\x1b\\x07\\r\\u202e]");
// deno-lint-ignore no-control-regex
const RAW_BAR = new RegExp("[\\x1b\\r]");

const SMALL = { layers: 1, hidden: 16, vocab: 32 } as const;

// --- 8. zero-sized dimensions ---------------------------------------------------

Deno.test("a weight with a zero-sized dimension is copied as is: a [16777216, 0] weight stays 0 bytes, no 64 MiB of scales", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await writeSyntheticCheckpoint(m, [
      { name: "wide.weight", shape: [16777216, 0], std: 0.1 },
      { name: "tall.weight", shape: [0, 64], std: 0.1 },
      { name: "fc.weight", shape: [4, 16], std: 0.1 },
    ]);
    const input = (await Deno.stat(join(m, "model.safetensors"))).size;
    let r = await runMain(["inspect", m]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /wide\.weight +BF16 +\[16777216, 0\] +0 B +keep +zero-sized dimension: nothing to quantize, copied as is\n/,
    );
    assert.match(
      r.stdout,
      /tall\.weight +BF16 +\[0, 64\] +0 B +keep +zero-sized/,
    );
    const out = join(dir, "q");
    r = await runMain(["quantize", m, "--out", out]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /1 Linear layer quantized .*, 2 tensors kept as is/);
    const size = (await Deno.stat(join(out, "model.safetensors"))).size;
    assert.ok(size < input + 1024, `${size} bytes from ${input}`);
    using q = await Checkpoint.open(out);
    assert.deepEqual(q.entry("wide.weight")?.info.shape, [16777216, 0]);
    assert.deepEqual(q.quantization?.modules, ["fc"]);
    for (const method of ["w8a32", "w8a8", "w4a16"]) {
      const o = join(dir, method);
      r = await runMain([
        "quantize",
        m,
        "--out",
        o,
        "--method",
        method,
        ...(method === "w4a16" ? ["-x", "fc"] : []),
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(
        (await Deno.stat(join(o, "model.safetensors"))).size < input + 1024,
      );
    }
    r = await runMain(["eval", m, out]);
    assert.equal(r.code, 0, r.stderr);
  });
});

// --- 9. silent surprises --------------------------------------------------------

Deno.test("--exclude that matches no Linear layer warns; the tensor name lm_head.weight is accepted", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, SMALL);
    const before = await tree(m);
    let r = await runMain([
      "quantize",
      m,
      "--out",
      join(dir, "a"),
      "-x",
      "lm_haed",
      "-x",
      "model.layers.*.mlp.nope",
      "-x",
      "model.embed_tokens",
    ]);
    assert.equal(r.code, 0);
    assert.equal(
      r.stderr,
      `tinyq: warning: --exclude "lm_haed" matches no Linear layer; nothing was excluded by it (see 'tinyq inspect' for the layer names)\n` +
        `tinyq: warning: --exclude "model.layers.*.mlp.nope" matches no Linear layer; nothing was excluded by it (see 'tinyq inspect' for the layer names)\n` +
        `tinyq: warning: --exclude "model.embed_tokens" matches no Linear layer; nothing was excluded by it (see 'tinyq inspect' for the layer names)\n`,
    );
    assert.match(r.stdout, /8 Linear layers quantized .*, 0 excluded/);
    r = await runMain([
      "quantize",
      m,
      "--out",
      join(dir, "b"),
      "-x",
      "lm_head.weight",
      "--json",
    ]);
    assert.equal(r.code, 0);
    assert.equal(r.stderr, "");
    assert.deepEqual(JSON.parse(r.stdout).excluded, ["lm_head"]);
    r = await runMain(["inspect", m, "-x", "lm_head.weight"]);
    assert.match(r.stdout, /lm_head\.weight +BF16 .* exclude /);
    assert.equal(r.stderr, "");
    for (const cmd of [["inspect", m], ["eval", m, "--schemes", "w8a16"]]) {
      r = await runMain([...cmd, "-x", "lm_haed"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        r.stderr,
        `tinyq: warning: --exclude "lm_haed" matches no Linear layer; nothing was excluded by it (see 'tinyq inspect' for the layer names)\n`,
      );
    }
    r = await runMain(["inspect", m, "-x", "lm_haed"]);
    assert.equal(
      r.stderr,
      `tinyq: warning: --exclude "lm_haed" matches no Linear layer; nothing was excluded by it (see 'tinyq inspect' for the layer names)\n`,
    );
    assert.deepEqual(await tree(m), before);
    // The library takes the tensor name too.
    const model = new Module();
    model.setChild("fc", new Linear(4, 2));
    model.setChild("lm_head", new Linear(2, 8));
    const quantizer = new Quantizer(model);
    await quantizer.quantize("w8a16", ["lm_head.weight", "lm_haed"]);
    assert.deepEqual(quantizer.report, {
      quantized: ["fc"],
      excluded: ["lm_head"],
    });
    assert.deepEqual(quantizer.unmatchedExcludes, ["lm_haed"]);
  });
});

Deno.test("flag mistakes are usage errors (exit 2) with one line, and nothing is written", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, SMALL);
    const before = await tree(dir);
    const o = join(dir, "o");
    const cases: [string[], string][] = [
      [
        ["quantize", m, "--out", o, "--out", join(dir, "p")],
        `tinyq quantize: --out given twice ("${o}" and "${dir}/p"); give it once`,
      ],
      [
        ["quantize", m, "-o", o, "--method", "w8a8", "-m", "w8a16"],
        `tinyq quantize: --method given twice ("w8a8" and "w8a16"); give it once`,
      ],
      [
        ["dequantize", m, "--out", o, "--dtype", "f16", "--dtype", "bf16"],
        `tinyq dequantize: --dtype given twice ("f16" and "bf16"); give it once`,
      ],
      [
        ["quantize", m, "--out", o, "--format", "quanto", "--method", "w8a8"],
        "tinyq quantize: --format quanto writes weight-only int8 (W8A16); --method w8a8 also quantizes activations (int8 dynamic per-token), which it cannot record: use --method w8a16",
      ],
      [
        ["quantize", m, "--out", o, "--format", "quanto", "--method", "w4a16"],
        "tinyq quantize: the quanto format does not store w4a16 4-bit (group 128) symmetric weights",
      ],
      [
        [
          "quantize",
          m,
          "--out",
          o,
          "--format",
          "compressed-tensors",
          "--method",
          "w8a8",
          "--asymmetric",
        ],
        "tinyq quantize: the compressed-tensors format does not store w8a8 8-bit asymmetric weights",
      ],
      [
        ["quantize", m, "--out", "-x"],
        `tinyq quantize: --out needs a value, and "-x" looks like an option; to pass a value that starts with a dash, write --out=-x`,
      ],
      [
        ["quantize", m, "-o", "-x"],
        `tinyq quantize: --out needs a value, and "-x" looks like an option; to pass a value that starts with a dash, write --out=-x`,
      ],
      [
        ["quantize", m, "--out", o, "--exclude", "-lm_head"],
        `tinyq quantize: --exclude needs a value, and "-lm_head" looks like an option; to pass a value that starts with a dash, write --exclude=-lm_head`,
      ],
      [
        ["eval", m, "--backend", "-cpu"],
        `tinyq eval: --backend needs a value, and "-cpu" looks like an option; to pass a value that starts with a dash, write --backend=-cpu`,
      ],
    ];
    for (const [args, line] of cases) {
      const r = await runMain(args);
      const cmd = args[0];
      assert.equal(
        r.stderr,
        `${line} (see tinyq ${cmd} --help)\n`,
        args.join(" "),
      );
      assert.equal(r.code, 2, args.join(" "));
      assert.equal(r.stdout, "");
    }
    assert.deepEqual(await tree(dir), before);
    // The spelled-out form works, for a name that starts with a dash.
    const r = await tinyq(["quantize", "m", "--out=-x"], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    await Deno.stat(join(dir, "-x", "model.safetensors.index.json"));
  });
});

Deno.test("escape sequences and other control characters in tensor names are escaped when printed", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    const evil = "evil\x1b[31mred\x1b]0;title\x07\u202e\r\n.proj";
    await writeSyntheticCheckpoint(m, [
      { name: `${evil}.weight`, shape: [4, 16], std: 0.1 },
    ]);
    const shown = "evil\\x1b[31mred\\x1b]0;title\\x07\\u202e\\x0d\\x0a.proj";
    assert.equal(escapeControls(evil, false), shown);
    assert.equal(escapeControls("a\tb\nc"), "a\tb\nc");
    let r = await runMain(["inspect", m]);
    assert.equal(r.code, 0);
    assert.ok(r.stdout.includes(`${shown}.weight`), r.stdout);
    assert.doesNotMatch(r.stdout, RAW);
    // The table keeps its columns: escaped before it is measured.
    const lines = r.stdout.split("\n");
    const head = lines.find((l) => l.startsWith("tensor "))!;
    const row = lines.find((l) => l.startsWith(shown))!;
    assert.equal(row.indexOf("BF16"), head.indexOf("dtype"));
    r = await runMain(["quantize", m, "--out", join(dir, "q"), "--verbose"]);
    assert.equal(r.code, 0);
    assert.ok(r.stderr.includes(`${shown}.weight`), r.stderr);
    assert.doesNotMatch(r.stderr + r.stdout, RAW);
    r = await runMain(["eval", m, join(dir, "q")]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes(shown));
    assert.doesNotMatch(r.stdout, RAW);
    // On a terminal the progress bar's own "\r\x1b[2K" still works.
    r = await runMain(["quantize", m, "--out", join(dir, "q2")], true);
    assert.equal(r.code, 0);
    assert.doesNotMatch(r.stderr.replaceAll("\r\x1b[2K", ""), RAW_BAR);
    // --json escapes them as JSON does.
    r = await runMain(["quantize", m, "--out", join(dir, "q3"), "--json"]);
    assert.deepEqual(JSON.parse(r.stdout).quantized, [evil]);
  });
});

Deno.test("Quantizer.quantize() twice is refused: method never lies about the layers", async () => {
  const model = new Module();
  model.setChild("fc", new Linear(8, 4));
  model.setChild("lm_head", new Linear(4, 8));
  const quantizer = new Quantizer(model);
  await quantizer.quantize("w8a8", ["lm_head"]);
  await assert.rejects(
    quantizer.quantize("w8a16"),
    new Error(
      "The model is already quantized (w8a8); load it again to quantize it with w8a16",
    ),
  );
  assert.equal(quantizer.method, "w8a8");
  assert.ok(model.getChild("lm_head") instanceof Linear, "lm_head untouched");
});

Deno.test("weights are immutable after the first forward: quantize() or a new tensor is seen by the next forward", async () => {
  const x = new Tensor(floats(3 * 16, 7), [3, 16]);
  const w1 = new Tensor(floats(4 * 16, 1), [4, 16]);
  const w2 = new Tensor(floats(4 * 16, 2), [4, 16]);
  for (const Layer of [W8A32LinearLayer, W8A16LinearLayer]) {
    const input = Layer === W8A16LinearLayer
      ? new Tensor(new Float16Array(x.data as Float32Array), [3, 16], "f16")
      : x;
    const fresh = async (w: Tensor) => {
      const l = new Layer(16, 4);
      l.quantize(w);
      return Array.from((await l.forward(input)).data as Float32Array);
    };
    const layer = new Layer(16, 4);
    layer.quantize(w1);
    const y1 = Array.from((await layer.forward(input)).data as Float32Array);
    assert.deepEqual(y1, await fresh(w1));
    // Quantizing again replaces the tensors: the backend's cache follows.
    layer.quantize(w2);
    const y2 = Array.from((await layer.forward(input)).data as Float32Array);
    assert.deepEqual(y2, await fresh(w2));
    assert.notDeepEqual(y2, y1);
    // So does assigning a new tensor (here w1's int8 values back).
    const ref = new Layer(16, 4);
    ref.quantize(w1);
    layer.int8Weights = new Tensor(
      (ref.int8Weights.data as Int8Array).slice(),
      [4, 16],
      "i8",
    );
    layer.scales = ref.scales;
    assert.deepEqual(
      Array.from((await layer.forward(input)).data as Float32Array),
      y1,
    );
  }
});

// --- 7. a plain nn.Linear state dict ------------------------------------------------

Deno.test("a plain nn.Linear state dict (weight, bias, no dots) is a checkpoint: inspect, quantize (every format), eval, dequantize", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "linear");
    await writeSyntheticCheckpoint(m, [
      { name: "weight", shape: [8, 128], std: 0.1 },
      { name: "bias", shape: [8], std: 0.1 },
    ]);
    const before = await tree(m);
    let r = await runMain(["inspect", m]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /\nweight +BF16 +\[8, 128\] +2\.00 KiB +quantize +generic rule: 2-D float weight\n/,
    );
    assert.match(r.stdout, /\nbias +BF16 +\[8\] +16 B +keep +bias of a Linear/);
    const q = join(dir, "q");
    r = await runMain(["quantize", m, "--out", q]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /1 Linear layer quantized \(w8a16, .*\), 0 excluded, 1 tensor kept as is/,
    );
    {
      using ckpt = await Checkpoint.open(q);
      assert.deepEqual(ckpt.quantization?.modules, [""]);
      assert.deepEqual(
        ckpt.entries.map((e) => e.name).sort(),
        ["bias", "int8_weights", "scales"],
      );
    }
    r = await runMain(["inspect", q]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\nint8_weights +I8 +\[8, 128\]/);
    r = await runMain(["eval", m, q]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\n\(root\) +\[8, 128\] /);
    assert.match(
      r.stdout,
      /verdict: PASS: 1 layers, worst output SNR [\d.]+ dB \(\(root\)\)/,
    );
    r = await runMain(["eval", m]);
    assert.equal(r.code, 0, r.stderr);
    r = await runMain(["dequantize", q, "--out", join(dir, "back")]);
    assert.equal(r.code, 0, r.stderr);
    {
      using back = await Checkpoint.open(join(dir, "back"));
      assert.deepEqual(back.entries.map((e) => e.name).sort(), [
        "bias",
        "weight",
      ]);
    }
    for (
      const [format, names] of [
        ["quanto", [
          "bias",
          "input_scale",
          "output_scale",
          "weight._data",
          "weight._scale",
        ]],
        ["compressed-tensors", [
          "bias",
          "weight_packed",
          "weight_scale",
          "weight_shape",
        ]],
      ] as const
    ) {
      const o = join(dir, format);
      r = await runMain(["quantize", m, "--out", o, "--format", format]);
      assert.equal(r.code, 0, r.stderr);
      using ckpt = await Checkpoint.open(o);
      assert.deepEqual(ckpt.entries.map((e) => e.name).sort(), names);
      r = await runMain(["eval", m, o]);
      assert.equal(r.code, 0, r.stderr);
    }
    r = await runMain([
      "quantize",
      m,
      "--out",
      join(dir, "w4"),
      "-m",
      "w4a16",
      "-g",
      "32",
    ]);
    assert.equal(r.code, 0, r.stderr);
    // The root layer is excluded by its weight's name.
    r = await runMain(["quantize", m, "--out", join(dir, "x"), "-x", "weight"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    assert.match(
      r.stdout,
      /0 Linear layers quantized .*, 1 excluded \(\(root\)\)/,
    );
    assert.deepEqual(await tree(m), before);
  });
});
