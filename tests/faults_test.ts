/**
 * Broken model folders, hostile content and faults during writing (issue 6):
 * every case exits 1 with one exact line, leaves no output and no temporary
 * files, and never writes the input.
 */

import assert from "node:assert/strict";
import { join, resolve } from "node:path";
import {
  makeDemoCheckpoint,
  writeSyntheticCheckpoint,
} from "../src/demo/demo_checkpoint.ts";
import { SafetensorsFile, writeSafetensors } from "../src/io/safetensors.ts";
import { quantizeCheckpoint } from "../src/io/quantize_checkpoint.ts";
import { runCli, runMain, snapshot, withDir } from "./_checkpoint_fixtures.ts";

/** Runs `tinyq quantize <input> --out <out>` in-process. */
function quantize(input: string, out: string, ...more: string[]) {
  return runMain(["quantize", input, "--out", out, ...more]);
}

/** Names in `dir`, sorted (to see leftovers such as temporary outputs). */
async function ls(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

/**
 * Asserts the run failed with exactly `line` on stderr, wrote nothing next to
 * the input and left the input as it was.
 */
async function assertRefused(
  dir: string,
  input: string,
  line: string,
  edit: (input: string) => Promise<void>,
): Promise<void> {
  await makeDemoCheckpoint(input, { layers: 1, hidden: 16, vocab: 32 });
  await edit(input);
  const before = await snapshot(input);
  const names = await ls(dir);
  const r = await quantize(input, join(dir, "out"));
  assert.equal(r.stderr, `tinyq quantize: error: ${line}\n`);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "");
  assert.deepEqual(await ls(dir), names, "no output, no temporary files");
  assert.deepEqual(await snapshot(input), before, "the input is untouched");
}

const INDEX = "model.safetensors.index.json";
const SHARD2 = "model-00002-of-00002.safetensors";

async function editIndex(
  input: string,
  fn: (index: Record<string, unknown>) => unknown,
): Promise<void> {
  const path = join(input, INDEX);
  const index = JSON.parse(await Deno.readTextFile(path));
  await Deno.writeTextFile(path, JSON.stringify(fn(index) ?? index));
}

Deno.test("model folders: every broken index, config and layout is refused with one exact line", async (t) => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    const reset = () => Deno.remove(m, { recursive: true }).catch(() => {});
    const cases: [string, string, (input: string) => Promise<void>][] = [
      [
        "index.json that is not JSON",
        `${m}/${INDEX}: not valid JSON (Expected property name or '}' in JSON at position 1 (line 1 column 2)); fix or remove it`,
        (i) => Deno.writeTextFile(join(i, INDEX), "{oops"),
      ],
      [
        "index.json without weight_map",
        `${m}/${INDEX}: has no "weight_map" object`,
        (i) => editIndex(i, (x) => ({ metadata: x.metadata })),
      ],
      [
        "index.json with an empty weight_map",
        `${m}/${INDEX}: weight_map is empty`,
        (i) => editIndex(i, () => ({ weight_map: {} })),
      ],
      [
        "index.json naming a missing shard",
        `${m}/${INDEX}: weight_map names the shard "${SHARD2}", which does not exist`,
        (i) => Deno.remove(join(i, SHARD2)),
      ],
      [
        "index.json naming a tensor that is not in its shard",
        `${m}/${INDEX}: tensor "model.norm.weight": weight_map puts it in model-00001-of-00002.safetensors, which has no tensor of that name`,
        (i) =>
          editIndex(i, (x) => {
            (x.weight_map as Record<string, string>)["model.norm.weight"] =
              "model-00001-of-00002.safetensors";
          }),
      ],
      [
        "a shard tensor missing from weight_map",
        `${m}/${SHARD2}: tensor "model.norm.weight": is not in the weight_map of ${INDEX}`,
        (i) =>
          editIndex(i, (x) => {
            delete (x.weight_map as Record<string, string>)[
              "model.norm.weight"
            ];
          }),
      ],
      [
        "a shard path leading out with ..",
        `${m}/${INDEX}: weight_map names the shard "../../etc/x.safetensors", which leads outside the model folder; refused`,
        (i) =>
          editIndex(i, (x) => {
            (x.weight_map as Record<string, string>)["model.norm.weight"] =
              "../../etc/x.safetensors";
          }),
      ],
      [
        "an absolute shard path",
        `${m}/${INDEX}: weight_map names the shard "/etc/passwd", an absolute path outside the model folder; refused`,
        (i) =>
          editIndex(i, (x) => {
            (x.weight_map as Record<string, string>)["model.norm.weight"] =
              "/etc/passwd";
          }),
      ],
      [
        "a shard that is a symlink leading out",
        `${m}/${INDEX}: weight_map names the shard "${SHARD2}", a symlink to ${await Deno
          .realPath(
            dir,
          )}/elsewhere.safetensors, outside the model folder; refused`,
        async (i) => {
          await Deno.rename(
            join(i, SHARD2),
            join(dir, "elsewhere.safetensors"),
          );
          await Deno.symlink(
            join(dir, "elsewhere.safetensors"),
            join(i, SHARD2),
          );
        },
      ],
      [
        "config.json that is not JSON",
        `${m}/config.json: not valid JSON (Unexpected token 'l', "llama" is not valid JSON); fix or remove it`,
        (i) => Deno.writeTextFile(join(i, "config.json"), "llama"),
      ],
      [
        "config.json that is not an object",
        `${m}/config.json: must be a JSON object; fix or remove it`,
        (i) => Deno.writeTextFile(join(i, "config.json"), "[1, 2]"),
      ],
      [
        "a folder with several .safetensors files and no index",
        `${m}: 2 .safetensors files (model-00001-of-00002.safetensors, ${SHARD2}) but no ${INDEX} saying how they form one model`,
        (i) => Deno.remove(join(i, INDEX)),
      ],
    ];
    for (const [name, line, edit] of cases) {
      await t.step(name, async () => {
        await reset();
        await Deno.remove(join(dir, "elsewhere.safetensors")).catch(() => {});
        await assertRefused(dir, m, line, edit);
      });
    }
    await reset();
  });
});

Deno.test("missing input and a folder without safetensors are clear errors", async () => {
  await withDir(async (dir) => {
    let r = await quantize(join(dir, "nope"), join(dir, "out"));
    assert.equal(
      r.stderr,
      `tinyq quantize: error: ${dir}/nope: no such file or folder\n`,
    );
    assert.equal(r.code, 1);
    await Deno.mkdir(join(dir, "empty"));
    await Deno.writeTextFile(join(dir, "empty", "README.md"), "hi");
    r = await quantize(join(dir, "empty"), join(dir, "out"));
    assert.equal(
      r.stderr,
      `tinyq quantize: error: ${dir}/empty: no model.safetensors, ${INDEX} or other .safetensors file in this folder (nor pytorch_model.bin or pytorch_model.bin.index.json)\n`,
    );
    assert.equal(r.code, 1);
    assert.deepEqual(await ls(dir), ["empty"]);
  });
});

async function writeSingle(
  dir: string,
  tensors: {
    name: string;
    dtype: "f32" | "bf16";
    shape: number[];
    data: Uint8Array;
  }[],
  config: unknown,
) {
  await Deno.mkdir(dir, { recursive: true });
  await writeSafetensors(
    join(dir, "model.safetensors"),
    tensors.map((t) => ({
      name: t.name,
      dtype: t.dtype,
      shape: t.shape,
      byteLength: t.data.byteLength,
      bytes: () => t.data,
    })),
  );
  if (config) {
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(config));
  }
}

Deno.test("NaN and ±Inf in a weight are refused, naming file, tensor and index (also past the first block)", async () => {
  await withDir(async (dir) => {
    // 5000 × 2048 bf16 is 20 MB: more than one 16 MiB block of rows.
    const rows = 5000, cols = 2048;
    const bits = new Uint16Array(rows * cols).fill(0x3c00);
    bits[4500 * cols + 7] = 0x7fc0; // NaN
    await writeSingle(join(dir, "nan"), [
      {
        name: "fc.weight",
        dtype: "bf16",
        shape: [rows, cols],
        data: new Uint8Array(bits.buffer),
      },
    ], { model_type: "custom" });
    let r = await quantize(join(dir, "nan"), join(dir, "out"));
    assert.equal(
      r.stderr,
      `tinyq quantize: error: ${dir}/nan/model.safetensors: tensor "fc.weight": has NaN at [4500, 7]; cannot quantize a non-finite weight\n`,
    );
    assert.equal(r.code, 1);

    const f = new Float32Array([1, 2, 3, -Infinity, 5, 6]);
    await writeSingle(join(dir, "inf"), [
      {
        name: "model.layers.0.mlp.up_proj.weight",
        dtype: "f32",
        shape: [2, 3],
        data: new Uint8Array(f.buffer),
      },
    ], { model_type: "llama" });
    r = await quantize(join(dir, "inf"), join(dir, "out"));
    assert.equal(
      r.stderr,
      `tinyq quantize: error: ${dir}/inf/model.safetensors: tensor "model.layers.0.mlp.up_proj.weight": has -Infinity at [1, 0]; cannot quantize a non-finite weight\n`,
    );
    assert.deepEqual(await ls(dir), ["inf", "nan"]);
  });
});

Deno.test("a Linear weight of the family table that is not 2-D is refused", async () => {
  await withDir(async (dir) => {
    await writeSingle(join(dir, "m"), [
      {
        name: "model.layers.0.self_attn.q_proj.weight",
        dtype: "f32",
        shape: [2, 2, 2],
        data: new Uint8Array(32),
      },
    ], { model_type: "llama" });
    const r = await quantize(join(dir, "m"), join(dir, "out"));
    assert.equal(
      r.stderr,
      `tinyq quantize: error: ${dir}/m/model.safetensors: tensor "model.layers.0.self_attn.q_proj.weight": ` +
        "a Linear weight (llama self_attn.q_proj) must be 2-D, got shape [2, 2, 2]\n",
    );
    assert.equal(r.code, 1);
  });
});

Deno.test("an already quantized input is refused: TinyQ's own, another tool's tensors, a quantization_config", async () => {
  await withDir(async (dir) => {
    await makeDemoCheckpoint(join(dir, "m"), {
      layers: 1,
      hidden: 16,
      vocab: 32,
    });
    await quantizeCheckpoint(join(dir, "m"), join(dir, "q"));
    let r = await quantize(join(dir, "q"), join(dir, "qq"));
    assert.equal(
      r.stderr,
      `tinyq quantize: error: ${dir}/q: already quantized by tinyq (w8a16, 8 modules); ` +
        "refusing to quantize twice (quantize the original checkpoint)\n",
    );
    assert.equal(r.code, 1);

    await writeSingle(join(dir, "gptq"), [
      {
        name: "model.layers.0.mlp.up_proj.qweight",
        dtype: "f32",
        shape: [1],
        data: new Uint8Array(4),
      },
    ], null);
    r = await quantize(join(dir, "gptq"), join(dir, "qq"));
    assert.equal(
      r.stderr,
      `tinyq quantize: error: ${dir}/gptq: already quantized (tensor "model.layers.0.mlp.up_proj.qweight" is GPTQ/AWQ output); ` +
        "refusing to quantize twice (quantize the original checkpoint)\n",
    );

    await writeSingle(join(dir, "awq"), [
      {
        name: "fc.weight",
        dtype: "f32",
        shape: [1, 1],
        data: new Uint8Array(4),
      },
    ], { model_type: "llama", quantization_config: { quant_method: "awq" } });
    r = await quantize(join(dir, "awq"), join(dir, "qq"));
    assert.equal(
      r.stderr,
      `tinyq quantize: error: ${dir}/awq: already quantized (config.json has a quantization_config with quant_method "awq"); ` +
        "refusing to quantize twice (quantize the original checkpoint)\n",
    );
    assert.deepEqual(await ls(dir), ["awq", "gptq", "m", "q"]);
  });
});

Deno.test("an existing output is refused without --force and a previous output replaced whole with it", async () => {
  await withDir(async (dir) => {
    await makeDemoCheckpoint(join(dir, "m"), {
      layers: 1,
      hidden: 16,
      vocab: 32,
    });
    let r = await quantize(join(dir, "m"), join(dir, "out"), "-x", "lm_head");
    assert.equal(r.code, 0, r.stderr);
    const first = await snapshot(join(dir, "out"));
    r = await quantize(join(dir, "m"), join(dir, "out"));
    assert.equal(
      r.stderr,
      `tinyq quantize: error: ${dir}/out: already exists (use --force to replace it)\n`,
    );
    assert.equal(r.code, 1);
    assert.deepEqual(await snapshot(join(dir, "out")), first);
    r = await quantize(join(dir, "m"), join(dir, "out"), "--force");
    assert.equal(r.code, 0, r.stderr);
    assert.notDeepEqual(await snapshot(join(dir, "out")), first);
    assert.deepEqual(
      await ls(dir),
      ["m", "out"],
      "no temporary or old copies left",
    );
  });
});

Deno.test("the output may not be the input or inside it, even with --force", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, { layers: 1, hidden: 16, vocab: 32 });
    const before = await snapshot(m);
    let r = await quantize(m, join(m, "q"), "--force");
    assert.equal(
      r.stderr,
      `tinyq quantize: error: ${m}/q: is the input ${m} or inside it; inputs are never written\n`,
    );
    r = await quantize(m, m, "--force");
    assert.equal(
      r.stderr,
      `tinyq quantize: error: ${m}: is the input ${m} or inside it; inputs are never written\n`,
    );
    r = await quantize(m, dir, "--force");
    assert.equal(
      r.stderr,
      `tinyq quantize: error: ${dir}: contains the input ${m}; choose another output\n`,
    );
    assert.deepEqual(await snapshot(m), before);
  });
});

Deno.test("a failure mid-write (NaN in the last shard) leaves no partial output", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, { layers: 1, hidden: 16, vocab: 32 });
    // A NaN in the last Linear weight of the second shard.
    const shard = join(m, SHARD2);
    let offset: number;
    {
      using f = await SafetensorsFile.open(shard);
      offset = f.get("model.layers.0.self_attn.v_proj.weight")!.byteOffset;
    }
    const bytes = await Deno.readFile(shard);
    bytes.set([0xc0, 0x7f], offset + 6);
    await Deno.writeFile(shard, bytes);
    const r = await quantize(m, join(dir, "out"));
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `tinyq quantize: error: ${shard}: tensor "model.layers.0.self_attn.v_proj.weight": has NaN at [0, 3]; cannot quantize a non-finite weight\n`,
    );
    assert.deepEqual(await ls(dir), ["m"]);
  });
});

function probeMount(): string | null {
  if (Deno.build.os !== "linux") return "not Linux";
  const dir = Deno.makeTempDirSync({ prefix: "tinyq-mount-probe-" });
  try {
    const r = new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir],
      stderr: "piped",
    }).outputSync();
    if (!r.success) {
      return `mount not permitted: ${
        new TextDecoder().decode(r.stderr).trim() || `exit ${r.code}`
      }`;
    }
    new Deno.Command("umount", { args: [dir] }).outputSync();
    return null;
  } catch (e) {
    return `mount not available: ${(e as Error).message}`;
  } finally {
    Deno.removeSync(dir);
  }
}

const NO_MOUNT = probeMount();
if (NO_MOUNT) console.warn(`faults_test: tmpfs tests skipped: ${NO_MOUNT}`);

async function withTmpfs(
  options: string,
  fn: (mnt: string) => Promise<void>,
): Promise<void> {
  const mnt = await Deno.makeTempDir({ prefix: "tinyq-tmpfs-" });
  const r = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", options, "tmpfs", mnt],
  }).output();
  assert.ok(r.success, "mount");
  try {
    await fn(mnt);
  } finally {
    const u = await new Deno.Command("umount", { args: [mnt] }).output();
    if (!u.success) {
      await new Deno.Command("umount", { args: ["-l", mnt] }).output();
    }
    await Deno.remove(mnt);
  }
}

Deno.test({
  name:
    `disk full while writing: exit 1 with the reason, no partial output, input intact${
      NO_MOUNT ? ` (skipped: ${NO_MOUNT})` : ""
    }`,
  ignore: NO_MOUNT !== null,
  fn: async () => {
    await withDir(async (dir) => {
      const m = join(dir, "m");
      await makeDemoCheckpoint(m, { layers: 1, hidden: 64, vocab: 4096 });
      const before = await snapshot(m);
      await withTmpfs("size=256k", async (mnt) => {
        const r = await quantize(m, join(mnt, "out"));
        assert.equal(r.code, 1);
        assert.match(
          r.stderr,
          new RegExp(
            `^tinyq quantize: error: ${mnt}/out/model-0000[12]-of-00002\\.safetensors: cannot write: No space left on device \\(os error 28\\)\\n$`,
          ),
        );
        assert.deepEqual(
          await ls(mnt),
          [],
          "no partial output, no temporary folder",
        );
      });
      assert.deepEqual(await snapshot(m), before);
    });
  },
});

Deno.test({
  name: `read-only destination: exit 1 naming the folder${
    NO_MOUNT ? ` (skipped: ${NO_MOUNT})` : ""
  }`,
  ignore: NO_MOUNT !== null,
  fn: async () => {
    await withDir(async (dir) => {
      const m = join(dir, "m");
      await makeDemoCheckpoint(m, { layers: 1, hidden: 16, vocab: 32 });
      await withTmpfs("ro,size=64k", async (mnt) => {
        let r = await quantize(m, join(mnt, "out"));
        assert.equal(
          r.stderr,
          `tinyq quantize: error: ${mnt}/out: cannot write in ${
            resolve(mnt)
          }: Read-only file system (os error 30)\n`,
        );
        assert.equal(r.code, 1);
        r = await quantize(join(m, SHARD2), join(mnt, "one.safetensors"));
        assert.equal(
          r.stderr,
          `tinyq quantize: error: ${mnt}/one.safetensors: cannot write in ${
            resolve(mnt)
          }: Read-only file system (os error 30)\n`,
        );
        assert.equal(r.code, 1);
      });
    });
  },
});

Deno.test("SIGINT/SIGTERM mid-run remove the temporary output and exit 130/143; a rerun succeeds", async (t) => {
  await withDir(async (dir) => {
    const m = join(dir, "big");
    // 4 × 64 MiB bf16 Linear weights: long enough a run to interrupt.
    await writeSyntheticCheckpoint(
      m,
      [0, 1, 2, 3].map((i) => ({
        name: `layers.${i}.fc.weight`,
        shape: [4096, 8192],
        std: 0.02,
      })),
    );
    const cli = new URL("../cli.ts", import.meta.url).pathname;
    for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
      await t.step(`${signal} → exit ${code}`, async () => {
        const out = join(dir, "out");
        const child = new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", cli, "quantize", m, "--out", out],
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        const tmp = join(dir, `.out.tinyq-tmp-${child.pid}`);
        const deadline = Date.now() + 30_000;
        let seen = false;
        while (Date.now() < deadline) {
          try {
            await Deno.stat(tmp);
            seen = true;
            break;
          } catch { /* not yet */ }
          await new Promise((r) => setTimeout(r, 2));
        }
        assert.ok(seen, "the run started writing");
        child.kill(signal);
        const status = await child.output();
        const stderr = new TextDecoder().decode(status.stderr);
        assert.equal(status.code, code, stderr);
        assert.match(
          stderr,
          new RegExp(
            `tinyq: interrupted by ${signal}; removed the partial output\\n$`,
          ),
        );
        assert.deepEqual(
          await ls(dir),
          ["big"],
          "no output, no temporary folder",
        );
      });
    }
    await t.step("rerun succeeds", async () => {
      const r = await runCli(["quantize", m, "--out", join(dir, "out")]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(await ls(dir), ["big", "out"]);
    });
  });
});
