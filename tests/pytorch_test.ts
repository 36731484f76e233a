import assert from "node:assert/strict";
import { join } from "node:path";
import { PytorchFile } from "../src/io/pytorch/state_dict.ts";
import { crc32, ZipArchive } from "../src/io/pytorch/zip.ts";
import { SafetensorsFile } from "../src/io/safetensors.ts";
import { Checkpoint, CheckpointError } from "../src/io/checkpoint.ts";
import { runCli, runMain, snapshot, withDir } from "./_checkpoint_fixtures.ts";

const FIX = new URL("./fixtures/pytorch/", import.meta.url).pathname;
const HOSTILE = join(FIX, "hostile");

Deno.test("PytorchFile reads every dtype, view, offset and tied storage as safetensors stores them", async () => {
  using bin = await PytorchFile.open(join(FIX, "dtypes.bin"));
  using st = await SafetensorsFile.open(join(FIX, "dtypes.safetensors"));
  // Same names in the same order (the safetensors writer's: dtype, then name).
  assert.deepEqual(
    bin.tensors.map((t) => t.name),
    st.tensors.map((t) => t.name),
  );
  for (const t of st.tensors) {
    const b = bin.get(t.name)!;
    assert.equal(b.dtype, t.dtype, t.name);
    assert.deepEqual(b.shape, t.shape, t.name);
    assert.deepEqual(
      await bin.readBytes(t.name),
      await st.readBytes(t.name),
      t.name,
    );
  }
  assert.ok(
    bin.get("view.transposed")!.readRange,
    "a transpose is a gathered view",
  );
  assert.equal(bin.get("view.offset")!.readRange !== undefined, true);
  assert.equal(
    bin.get("view.flat_tail")!.readRange,
    undefined,
    "an offset run is one read",
  );
  assert.deepEqual([...(await bin.read("view.flat_tail")).data], [
    20,
    21,
    22,
    23,
  ]);
  // A part of a gathered view reads as that part of the contiguous tensor.
  const whole = await bin.readBytes("view.transposed");
  assert.deepEqual(
    await bin.readRange("view.transposed", 8, 20),
    whole.subarray(8, 28),
  );
  assert.deepEqual(bin.metadata, null);
});

Deno.test("a .bin and a .safetensors copy of the same weights quantize to byte-identical outputs", async () => {
  await withDir(async (dir) => {
    for (const flags of [[], ["--method", "w4a16", "--group-size", "32"]]) {
      const a = join(dir, `bin${flags.length}`);
      const b = join(dir, `st${flags.length}`);
      let r = await runMain([
        "quantize",
        join(FIX, "llama_bin"),
        "-o",
        a,
        ...flags,
      ]);
      assert.equal(r.code, 0, r.stderr);
      r = await runMain([
        "quantize",
        join(FIX, "llama_safetensors"),
        "-o",
        b,
        ...flags,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const sa = await snapshot(a);
      const sb = await snapshot(b);
      assert.deepEqual([...sa.keys()], ["config.json", "model.safetensors"]);
      assert.deepEqual(sa, sb);
    }
  });
});

Deno.test("a sharded .bin with pytorch_model.bin.index.json quantizes to safetensors shards with a safetensors index", async () => {
  await withDir(async (dir) => {
    const out = join(dir, "q");
    const r = await runMain([
      "quantize",
      join(FIX, "llama_bin_sharded"),
      "-o",
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const files = [...(await snapshot(out)).keys()];
    assert.deepEqual(files, [
      "config.json",
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
      "model.safetensors.index.json",
    ]);
    using q = await Checkpoint.open(out);
    using single = await Checkpoint.open(join(FIX, "llama_bin"));
    assert.equal(q.quantization?.modules.length, 8);
    // The same weights as the single-file .bin, quantized.
    const w = await q.dequantizedWeight("model.layers.0.mlp.up_proj");
    const orig = await single.read("model.layers.0.mlp.up_proj.weight");
    assert.equal(w.length, orig.data.length);
  });
});

Deno.test("inspect, eval and dequantize accept .bin folders and files", async () => {
  let r = await runMain(["inspect", join(FIX, "llama_bin")]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stdout,
    /^.*llama_bin: folder, 1 shard\(s\), 12 tensors, .* \(PyTorch torch.save zip, read without running its pickle\)$/m,
  );
  assert.match(r.stdout, /family: +llama/);
  assert.match(
    r.stdout,
    /model\.layers\.0\.mlp\.up_proj\.weight +BF16 +\[64, 32\].*quantize/,
  );
  r = await runMain(["inspect", join(FIX, "dtypes.bin"), "--json"]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(JSON.parse(r.stdout));
  r = await runMain(["eval", join(FIX, "llama_bin_sharded")]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /w8a16/);
  await withDir(async (dir) => {
    const q = join(dir, "q");
    assert.equal(
      (await runMain(["quantize", join(FIX, "llama_bin"), "-o", q])).code,
      0,
    );
    r = await runMain(["eval", join(FIX, "llama_bin"), q]);
    assert.equal(r.code, 0, r.stderr);
    r = await runMain(["dequantize", q, "-o", join(dir, "d")]);
    assert.equal(r.code, 0, r.stderr);
    // A float .bin given to dequantize gets dequantize's own message.
    r = await runMain([
      "dequantize",
      join(FIX, "llama_bin"),
      "-o",
      join(dir, "d2"),
    ]);
    assert.equal(r.code, 1);
    assert.doesNotMatch(r.stderr, /no model\.safetensors/);
  });
});

const MARKERS = ["os_system", "eval", "builtins_eval", "in_dict"];

Deno.test("hostile pickles are refused with one line naming the global, and nothing runs", async () => {
  for (const m of MARKERS) {
    await Deno.remove(`/tmp/tinyq-pwned-${m}`).catch(() => {});
  }
  const expect: Record<string, RegExp> = {
    os_system: /refuses the pickled global os\.system/,
    eval: /refuses the pickled global __builtin__\.eval/,
    builtins_eval: /refuses the pickled global builtins\.eval/,
    in_dict: /refuses the pickled global posix\.system/,
  };
  for (const [name, re] of Object.entries(expect)) {
    const path = join(HOSTILE, `${name}.bin`);
    await assert.rejects(PytorchFile.open(path), (e) => {
      assert.ok(e instanceof CheckpointError, String(e));
      assert.match(e.message, re);
      assert.doesNotMatch(e.message, /\n/);
      return true;
    });
    // Through the CLI too, as a separate process: exit 1, one line.
    const r = await runCli(["inspect", path]);
    assert.equal(r.code, 1, name);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
  for (const m of MARKERS) {
    assert.equal(
      await Deno.stat(`/tmp/tinyq-pwned-${m}`).then(() => true, () => false),
      false,
      `payload ${m} ran`,
    );
  }
});

Deno.test("depth bombs, huge lengths, escaping zips and other malformed files are refused with a clear line", async () => {
  const cases: Record<string, RegExp> = {
    depth_marks: /MARKs nested more than \d+ deep/,
    depth_lists: /more than 10000 values on the stack; refused/,
    depth_memo: /tensor "w": holds a list of 1, not a tensor/,
    huge_unicode:
      /a string of 4294967280 bytes at byte \d+, but only 4 are left/,
    huge_unicode8: /only 4 are left; refused/,
    huge_long4: /an integer of 2147483647 bytes; refused/,
    huge_memo: /memo entry 2147483646 was never stored/,
    storage_too_short:
      /tensor "w": its storage declares 67108864 bytes but data\/0 holds 16/,
    zip_escape:
      /zip entry "\.\.\/\.\.\/escape\/data\.pkl" has a '\.\.' component, leading outside the archive; refused/,
    zip_absolute: /has an absolute path, leading outside the archive/,
    deflated: /is compressed \(method 8\)/,
    bare_tensor: /holds a tensor, not a state dict/,
    list: /holds a list of 1, not a state dict/,
    legacy: /legacy \(pre-1\.6, non-zip\) format/,
  };
  for (const [name, re] of Object.entries(cases)) {
    const t0 = performance.now();
    await assert.rejects(
      PytorchFile.open(join(HOSTILE, `${name}.bin`)),
      (e) => {
        assert.ok(e instanceof CheckpointError, `${name}: ${e}`);
        assert.match(e.message, re, name);
        assert.doesNotMatch(e.message, /\n/);
        return true;
      },
    );
    assert.ok(performance.now() - t0 < 5000, `${name} took too long`);
  }
});

/** A zip of `entries` written with zip64 records throughout, as torch.save does past 4 GiB. */
function zip64(entries: [string, Uint8Array][]): Uint8Array {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let pos = 0;
  const enc = new TextEncoder();
  for (const [name, data] of entries) {
    const n = enc.encode(name);
    const pad = (64 - ((pos + 30 + n.length + 4) % 64)) % 64;
    const local = new Uint8Array(30 + n.length + 4 + pad);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 45, true);
    lv.setUint32(14, crc32(data), true);
    lv.setUint32(18, data.length, true);
    lv.setUint32(22, data.length, true);
    lv.setUint16(26, n.length, true);
    lv.setUint16(28, 4 + pad, true);
    local.set(n, 30);
    lv.setUint16(30 + n.length, 0xcafe, true); // padding field, as torch's writer adds
    lv.setUint16(32 + n.length, pad, true);
    const c = new Uint8Array(46 + n.length + 28);
    const cv = new DataView(c.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(6, 45, true);
    cv.setUint32(16, crc32(data), true);
    cv.setUint32(20, 0xffffffff, true);
    cv.setUint32(24, 0xffffffff, true);
    cv.setUint16(28, n.length, true);
    cv.setUint16(30, 28, true);
    cv.setUint32(42, 0xffffffff, true);
    c.set(n, 46);
    const e = 46 + n.length;
    cv.setUint16(e, 1, true);
    cv.setUint16(e + 2, 24, true);
    cv.setBigUint64(e + 4, BigInt(data.length), true);
    cv.setBigUint64(e + 12, BigInt(data.length), true);
    cv.setBigUint64(e + 20, BigInt(pos), true);
    central.push(c);
    parts.push(local, data);
    pos += local.length + data.length;
  }
  const cdStart = pos;
  const cdSize = central.reduce((s, c) => s + c.length, 0);
  const tail = new Uint8Array(56 + 20 + 22);
  const tv = new DataView(tail.buffer);
  tv.setUint32(0, 0x06064b50, true);
  tv.setBigUint64(4, 44n, true);
  tv.setBigUint64(24, BigInt(entries.length), true);
  tv.setBigUint64(32, BigInt(entries.length), true);
  tv.setBigUint64(40, BigInt(cdSize), true);
  tv.setBigUint64(48, BigInt(cdStart), true);
  tv.setUint32(56, 0x07064b50, true);
  tv.setBigUint64(64, BigInt(cdStart + cdSize), true);
  tv.setUint32(72, 1, true);
  tv.setUint32(76, 0x06054b50, true);
  tv.setUint16(84, 0xffff, true);
  tv.setUint16(86, 0xffff, true);
  tv.setUint32(88, 0xffffffff, true);
  tv.setUint32(92, 0xffffffff, true);
  const all = [...parts, ...central, tail];
  const out = new Uint8Array(all.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of all) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

Deno.test("zip64 archives (sizes and offsets in zip64 fields) read the same as plain ones", async () => {
  await withDir(async (dir) => {
    const src = join(FIX, "dtypes.bin");
    const file = await Deno.open(src);
    const entries: [string, Uint8Array][] = [];
    try {
      const zip = await ZipArchive.open(file, src, (await file.stat()).size);
      for (const e of zip.entries) {
        const at = await zip.dataOffset(file, e);
        const buf = new Uint8Array(e.size);
        await file.seek(at, Deno.SeekMode.Start);
        let done = 0;
        while (done < e.size) done += (await file.read(buf.subarray(done)))!;
        entries.push([e.name, buf]);
      }
    } finally {
      file.close();
    }
    const path = join(dir, "zip64.bin");
    await Deno.writeFile(path, zip64(entries));
    using a = await PytorchFile.open(src);
    using b = await PytorchFile.open(path);
    assert.deepEqual(
      b.tensors.map((t) => t.name),
      a.tensors.map((t) => t.name),
    );
    for (const t of a.tensors) {
      assert.deepEqual(
        await b.readBytes(t.name),
        await a.readBytes(t.name),
        t.name,
      );
    }
  });
});

Deno.test("a .bin in a folder with no safetensors is found; the folder error names both formats", async () => {
  await withDir(async (dir) => {
    await Deno.copyFile(
      join(FIX, "llama_bin", "pytorch_model.bin"),
      join(dir, "pytorch_model.bin"),
    );
    using c = await Checkpoint.open(dir);
    assert.deepEqual(c.shardNames, ["pytorch_model.bin"]);
    assert.equal(c.linears().length, 8);
    await Deno.remove(join(dir, "pytorch_model.bin"));
    await assert.rejects(
      Checkpoint.open(dir),
      /no model\.safetensors, model\.safetensors\.index\.json or other \.safetensors file in this folder \(nor pytorch_model\.bin or pytorch_model\.bin\.index\.json\)/,
    );
  });
});

Deno.test("OPT and CodeGen checkpoints saved from transformers: inspect shows the family table's decisions", async () => {
  let r = await runMain(["inspect", join(FIX, "opt_bin")]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /family: +opt \(config\.json model_type "opt"\)/);
  for (
    const tail of [
      "self_attn.q_proj",
      "self_attn.out_proj",
      "fc1",
      "fc2",
      "decoder.project_in",
    ]
  ) {
    assert.match(
      r.stdout,
      new RegExp(
        `\\.${
          tail.replace(".", "\\.")
        }\\.weight .* quantize +opt table: ${tail}\\n`,
      ),
    );
  }
  assert.match(
    r.stdout,
    /embed_positions\.weight .* keep +not a Linear of the opt table/,
  );
  assert.match(r.stdout, /fc1\.bias .* keep +bias of a Linear/);
  r = await runMain(["inspect", join(FIX, "codegen_bin")]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /family: +codegen/);
  for (
    const tail of ["attn.qkv_proj", "attn.out_proj", "mlp.fc_in", "mlp.fc_out"]
  ) {
    assert.match(
      r.stdout,
      new RegExp(
        `\\.${
          tail.replace(".", "\\.")
        }\\.weight .* quantize +codegen table: ${tail}\\n`,
      ),
    );
  }
  assert.match(
    r.stdout,
    /transformer\.wte\.weight .* keep +not a Linear of the codegen table/,
  );
  await withDir(async (dir) => {
    for (const m of ["opt_bin", "codegen_bin"]) {
      const out = join(dir, m);
      const q = await runMain(["quantize", join(FIX, m), "-o", out]);
      assert.equal(q.code, 0, q.stderr);
      using c = await Checkpoint.open(out);
      assert.equal(c.quantization?.modules.length, m === "opt_bin" ? 9 : 5);
    }
  });
});

/** models/tinystories-656k with its weights as torch.save wrote them. */
async function tinyStoriesBin(dir: string): Promise<string> {
  const src = new URL("../models/tinystories-656k/", import.meta.url).pathname;
  const out = join(dir, "tinystories-bin");
  await Deno.mkdir(out);
  for await (const e of Deno.readDir(src)) {
    if (e.isFile && e.name !== "model.safetensors") {
      await Deno.copyFile(join(src, e.name), join(out, e.name));
    }
  }
  await Deno.copyFile(
    join(FIX, "tinystories-656k.bin"),
    join(out, "pytorch_model.bin"),
  );
  return out;
}

Deno.test("the real TinyStories-656K as pytorch_model.bin quantizes byte-identically to its model.safetensors", async () => {
  await withDir(async (dir) => {
    const bin = await tinyStoriesBin(dir);
    const st = new URL("../models/tinystories-656k", import.meta.url).pathname;
    using a = await Checkpoint.open(bin);
    using b = await Checkpoint.open(st);
    assert.deepEqual(
      a.entries.map((e) => e.name),
      b.entries.map((e) => e.name),
    );
    for (const e of b.entries) {
      assert.deepEqual(await a.read(e.name), await b.read(e.name), e.name);
    }
    for (const flags of [["-x", "lm_head"], ["-m", "w4a16", "-g", "32"]]) {
      const qa = join(dir, `qa${flags.length}`);
      const qb = join(dir, `qb${flags.length}`);
      assert.equal(
        (await runMain(["quantize", bin, "-o", qa, ...flags])).code,
        0,
      );
      assert.equal(
        (await runMain(["quantize", st, "-o", qb, ...flags])).code,
        0,
      );
      const sa = await snapshot(qa);
      const sb = await snapshot(qb);
      assert.deepEqual(sa, sb);
    }
  });
});

Deno.test("Linear weights stored as non-contiguous views quantize through the view, as their contiguous twins do", async () => {
  await withDir(async (dir) => {
    using v = await PytorchFile.open(
      join(FIX, "views_bin", "pytorch_model.bin"),
    );
    for (
      const n of ["a.weight", "b.weight", "c.weight", "c.bias", "n.weight"]
    ) {
      assert.ok(v.get(n)!.readRange, `${n} is a view`);
    }
    for (
      const flags of [[], ["-m", "w4a16", "-g", "32", "--asymmetric"], [
        "--max-shard-size",
        "4KB",
      ]]
    ) {
      const a = join(dir, `a${flags.length}`);
      const b = join(dir, `b${flags.length}`);
      let r = await runMain([
        "quantize",
        join(FIX, "views_bin"),
        "-o",
        a,
        ...flags,
      ]);
      assert.equal(r.code, 0, r.stderr);
      r = await runMain([
        "quantize",
        join(FIX, "views_safetensors"),
        "-o",
        b,
        ...flags,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(await snapshot(a), await snapshot(b), flags.join(" "));
    }
  });
});

// The model runtime (issue 11) loads through Checkpoint.open, so a .bin folder
// and a Hugging Face cache id reach it unchanged. Live once the runtime is
// on the branch; until then there is nothing to load with.
const RUNTIME = new URL("../src/models/load_causal_lm.ts", import.meta.url);
const hasRuntime = await Deno.stat(RUNTIME).then(() => true, () => false);

Deno.test({
  name:
    "loadCausalLM on pytorch_model.bin gives the safetensors model's logits exactly",
  ignore: !hasRuntime,
  fn: async () => {
    interface LM {
      logits(ids: readonly number[]): Promise<Float32Array>;
      dispose(): void;
    }
    const { loadCausalLM } = await import(RUNTIME.href) as {
      loadCausalLM: (p: string, o?: { backend?: string }) => Promise<LM>;
    };
    await withDir(async (dir) => {
      const bin = await tinyStoriesBin(dir);
      const st =
        new URL("../models/tinystories-656k", import.meta.url).pathname;
      const ids = [1, 403, 407, 12, 99];
      const a = await loadCausalLM(bin, { backend: "cpu" });
      const b = await loadCausalLM(st, { backend: "cpu" });
      try {
        assert.deepEqual(await a.logits(ids), await b.logits(ids));
      } finally {
        a.dispose();
        b.dispose();
      }
    });
  },
});
