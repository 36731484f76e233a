/**
 * Nothing lost, ever (issue 14): what `--force` may replace, signals, two
 * runs at once, broken pipes, special files and late failures. Every case
 * checks the exact message and exit status, and hashes the whole test folder
 * (inputs, neighbours, hidden files) before and after: nothing but the
 * intended output changes and no temporary file or lock is left.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { makeDemoCheckpoint } from "../src/demo/demo_checkpoint.ts";
import { Checkpoint } from "../src/io/checkpoint.ts";
import { HANDLED_SIGNALS } from "../src/cli/_signals.ts";
import { sidecarName } from "../src/io/_sidecars.ts";
import { main } from "../cli.ts";
import { runMain, withDir } from "./_checkpoint_fixtures.ts";
import {
  deadPid,
  finish,
  mkfifo,
  ready,
  spawnTinyq,
  tinyq,
  tree,
  treeBut,
} from "./_nothing_lost_helpers.ts";

const SMALL = { layers: 1, hidden: 16, vocab: 32 } as const;
const NOT_OURS =
  "--force replaces only an output TinyQ wrote, never other files";

/** The names in `dir` (hidden ones too), sorted. */
async function names(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
}

function quantize(input: string, out: string, ...more: string[]) {
  return runMain(["quantize", input, "--out", out, ...more]);
}

/** Asserts `run` fails with `line`, exit 1, and changes nothing in `dir`. */
async function assertNothingChanged(
  dir: string,
  line: string,
  run: () => Promise<{ code: number; stdout: string; stderr: string }>,
): Promise<void> {
  const before = await tree(dir);
  const r = await run();
  assert.equal(r.stderr, line + "\n");
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "");
  assert.deepEqual(await tree(dir), before, "nothing changed, nothing left");
}

// --- 1. --force ------------------------------------------------------------

Deno.test("--force refuses, changing nothing, what TinyQ did not write: a work folder, a folder of models, a foreign checkpoint, extra files, links, non-safetensors files", async (t) => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, SMALL);
    const out = join(dir, "out");
    const reset = () => Deno.remove(out, { recursive: true }).catch(() => {});
    const cases: [string, () => Promise<unknown>, string, string?][] = [
      [
        "a folder holding notes.txt (tinyq quantize m --out . --force)",
        async () => {
          await Deno.mkdir(out);
          await Deno.writeTextFile(join(out, "notes.txt"), "mine");
        },
        `${out}: is a folder that is not a checkpoint (no model.safetensors or model.safetensors.index.json); ${NOT_OURS}`,
      ],
      [
        "a folder of other models (--out ~/models --force)",
        async () => {
          await makeDemoCheckpoint(join(out, "llama"), SMALL);
          await quantize(m, join(out, "llama-int8"));
        },
        `${out}: is a folder that is not a checkpoint (no model.safetensors or model.safetensors.index.json); ${NOT_OURS}`,
      ],
      [
        "a float checkpoint TinyQ did not write",
        () => makeDemoCheckpoint(out, SMALL),
        `${out}: is a checkpoint TinyQ did not write (model-00001-of-00002.safetensors has no TinyQ metadata); ${NOT_OURS}`,
      ],
      [
        "a previous output with the user's notes added",
        async () => {
          assert.equal((await quantize(m, out)).code, 0);
          await Deno.writeTextFile(join(out, "notes.txt"), "mine");
        },
        `${out}: contains notes.txt, which this run would not write (move it away or choose another --out); ${NOT_OURS}`,
      ],
      [
        "a previous output that copied a file the input no longer has",
        async () => {
          assert.equal((await quantize(m, out)).code, 0);
          await Deno.mkdir(join(out, "extra"));
          await Deno.writeTextFile(join(out, "extra", "a.txt"), "a");
          await Deno.writeTextFile(join(out, "extra", "b.txt"), "b");
          await Deno.writeTextFile(join(out, "README.md"), "r");
          await Deno.writeTextFile(join(out, "LICENSE"), "l");
        },
        `${out}: contains LICENSE, README.md, extra/a.txt and 1 more, which this run would not write (move them away or choose another --out); ${NOT_OURS}`,
      ],
      [
        "a symlink to a previous output",
        async () => {
          assert.equal((await quantize(m, join(dir, "real"))).code, 0);
          await Deno.symlink(join(dir, "real"), out);
        },
        `${out}: is a symlink (remove it or choose another --out); ${NOT_OURS}`,
      ],
      [
        "a file where a folder output goes",
        () => Deno.writeTextFile(out, "mine"),
        `${out}: is a file, and this run writes a checkpoint folder; ${NOT_OURS}`,
      ],
      [
        "a text file where a single-file output goes",
        () => Deno.writeTextFile(out, "mine"),
        `${out}: is not a safetensors file; ${NOT_OURS}`,
        "file",
      ],
      [
        "a folder where a single-file output goes",
        () => Deno.mkdir(out),
        `${out}: is a folder, and this run writes a single file; ${NOT_OURS}`,
        "file",
      ],
    ];
    for (const [name, setup, line, kind] of cases) {
      await t.step(name, async () => {
        await reset();
        await Deno.remove(join(dir, "real"), { recursive: true }).catch(
          () => {},
        );
        await setup();
        const input = kind === "file"
          ? join(m, "model-00001-of-00002.safetensors")
          : m;
        await assertNothingChanged(
          dir,
          `tinyq quantize: error: ${line}`,
          () => quantize(input, out, "--force"),
        );
      });
    }
  });
});

Deno.test("--out . --force in a work folder is refused and deletes nothing (real process, relative path)", async () => {
  await withDir(async (dir) => {
    await makeDemoCheckpoint(join(dir, "m"), SMALL);
    await Deno.writeTextFile(join(dir, "notes.txt"), "mine");
    const before = await tree(dir);
    const r = await tinyq(["quantize", "m", "--out", ".", "--force"], {
      cwd: dir,
    });
    assert.equal(
      r.stderr,
      "tinyq quantize: error: .: contains the input m; choose another output\n",
    );
    assert.equal(r.code, 1);
    const sub = join(dir, "work");
    await Deno.mkdir(sub);
    await Deno.writeTextFile(join(sub, "notes.txt"), "mine");
    const r2 = await tinyq(["quantize", "../m", "--out", ".", "--force"], {
      cwd: sub,
    });
    assert.equal(
      r2.stderr,
      `tinyq quantize: error: .: is a folder that is not a checkpoint (no model.safetensors or model.safetensors.index.json); ${NOT_OURS}\n`,
    );
    assert.equal(r2.code, 1);
    before.set("work/", "dir");
    before.set("work/notes.txt", (await tree(dir)).get("work/notes.txt")!);
    assert.deepEqual(await tree(dir), new Map([...before].sort()));
  });
});

Deno.test("--force replaces TinyQ's own outputs: a quantized folder, a dequantized folder, another format's output, an empty folder, a single safetensors file", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, SMALL);
    const out = join(dir, "out");
    const back = join(dir, "back");
    const r0 = await quantize(m, out, "--format", "quanto");
    assert.equal(r0.code, 0, r0.stderr);
    const input = await tree(m);
    // quanto → tinyq format: quanto_qmap.json is TinyQ's own too.
    let r = await quantize(m, out, "--force", "--max-shard-size", "1GB");
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      [...(await tree(out)).keys()],
      [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
      ],
    );
    r = await runMain(["dequantize", out, "--out", back]);
    assert.equal(r.code, 0, r.stderr);
    r = await runMain(["dequantize", out, "--out", back, "--force"]);
    assert.equal(r.code, 0, r.stderr);
    // A dequantized output says so in its metadata; --force knows it.
    r = await quantize(m, back, "--force");
    assert.equal(r.code, 0, r.stderr);
    using q = await Checkpoint.open(back);
    assert.equal(q.quantization?.method, "w8a16");
    await Deno.mkdir(join(dir, "empty"));
    r = await quantize(m, join(dir, "empty"), "--force");
    assert.equal(r.code, 0, r.stderr);
    const single = join(dir, "one.safetensors");
    const shard = join(m, "model-00002-of-00002.safetensors");
    await Deno.copyFile(shard, single);
    r = await quantize(shard, single, "--force");
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await tree(m), input, "the input is untouched");
    const hidden = [...(await tree(dir)).keys()].filter((k) =>
      k.split("/").some((p) => p.startsWith("."))
    );
    assert.deepEqual(hidden, [], "no temporary, old or lock files");
  });
});

function canMount(): boolean {
  if (Deno.build.os !== "linux") return false;
  const dir = Deno.makeTempDirSync({ prefix: "tinyq-mount-probe-" });
  try {
    const r = new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir],
      stderr: "null",
    }).outputSync();
    if (r.success) new Deno.Command("umount", { args: [dir] }).outputSync();
    return r.success;
  } catch {
    return false;
  } finally {
    Deno.removeSync(dir);
  }
}
const MOUNT = canMount();

Deno.test({
  name:
    `a mount point as --out is refused at the start, with or without --force; a folder inside it works${
      MOUNT ? "" : " (skipped: mount not permitted here)"
    }`,
  ignore: !MOUNT,
  fn: async () => {
    await withDir(async (dir) => {
      const m = join(dir, "m");
      await makeDemoCheckpoint(m, SMALL);
      const mnt = join(dir, "vol");
      await Deno.mkdir(mnt);
      const r = await new Deno.Command("mount", {
        args: ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt],
      }).output();
      assert.ok(r.success);
      try {
        await Deno.writeTextFile(join(mnt, "keep.txt"), "keep");
        const before = await tree(dir);
        for (const force of [[], ["--force"]]) {
          const res = await quantize(m, mnt, ...force);
          assert.equal(
            res.stderr,
            `tinyq quantize: error: ${mnt}: is a mount point, which cannot be replaced; write into it instead (--out ${mnt}/NAME)\n`,
          );
          assert.equal(res.code, 1);
          assert.deepEqual(await tree(dir), before);
        }
        const ok = await quantize(m, join(mnt, "q"));
        assert.equal(ok.code, 0, ok.stderr);
        // A file bind-mounted over another (a config file given to a
        // container) cannot be renamed over either.
        const target = join(dir, "mounted.safetensors");
        await Deno.copyFile(
          join(m, "model-00002-of-00002.safetensors"),
          target,
        );
        const bind = await new Deno.Command("mount", {
          args: ["--bind", join(m, "model-00001-of-00002.safetensors"), target],
        }).output();
        if (bind.success) {
          try {
            const res = await quantize(
              join(m, "model-00002-of-00002.safetensors"),
              target,
              "--force",
            );
            assert.equal(
              res.stderr,
              `tinyq quantize: error: ${target}: is a mounted file, which cannot be replaced; choose another --out\n`,
            );
            assert.equal(res.code, 1);
          } finally {
            await new Deno.Command("umount", { args: [target] }).output();
          }
        }
      } finally {
        await new Deno.Command("umount", { args: ["-l", mnt] }).output();
      }
    });
  },
});

// --- 2. signals, leftovers of dead runs ---------------------------------------

Deno.test("every handled signal mid-run removes the temporary output and the lock and exits 128+n; --force keeps the previous output", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, SMALL);
    assert.equal((await quantize(m, join(dir, "prev"))).code, 0);
    const before = await tree(dir);
    // All at once, each on its own output: real processes, real signals.
    await Promise.all(HANDLED_SIGNALS.map(async ([signal, n], i) => {
      const hold = join(dir, "..", `${dir.split("/").pop()}-hold-${i}`);
      // One run replaces an existing output with --force.
      const args = signal === "SIGTERM"
        ? ["quantize", m, "--out", join(dir, "prev"), "--force"]
        : signal === "SIGQUIT"
        ? [
          "quantize",
          join(m, "model-00001-of-00002.safetensors"),
          "--out",
          join(dir, "one.safetensors"),
        ]
        : i % 2
        ? ["dequantize", join(dir, "prev"), "--out", join(dir, `o${i}`)]
        : ["quantize", m, "--out", join(dir, `o${i}`)];
      const child = spawnTinyq(args, { hold });
      const pid = await ready(hold, child);
      assert.equal(pid, child.pid);
      child.kill(signal);
      const r = await finish(child);
      await Deno.remove(hold);
      assert.equal(r.code, 128 + n, `${signal}: ${r.stderr}`);
      assert.equal(
        r.stderr,
        `\ntinyq: interrupted by ${signal}; removed the partial output\n`,
        signal,
      );
    }));
    assert.deepEqual(await tree(dir), before, "no output, temp or lock left");
  });
});

Deno.test("tinyq demo leaves nothing behind on SIGHUP", async () => {
  await withDir(async (dir) => {
    const tmp = join(dir, "tmp");
    await Deno.mkdir(tmp);
    const child = spawnTinyq(["demo"], { env: { TMPDIR: tmp } });
    // Its first words on stdout say it is under way (whatever it writes).
    const reader = child.stdout.getReader();
    const first = await reader.read();
    assert.ok(!first.done, "the demo started");
    child.kill("SIGHUP");
    reader.releaseLock();
    const r = await finish(child);
    assert.equal(r.code, 129, r.stderr);
    assert.match(
      r.stderr,
      /\ntinyq: interrupted by SIGHUP(; removed the partial output)?\n$/,
    );
    assert.deepEqual(await tree(tmp), new Map(), "nothing left in TMPDIR");
  });
});

Deno.test("after kill -9 the next run removes the dead run's temporary output and lock, saying so", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, SMALL);
    const out = join(dir, "out");
    const before = await tree(dir);
    const hold = join(dir, "..", `${dir.split("/").pop()}-hold`);
    const child = spawnTinyq(["quantize", m, "--out", out], { hold });
    const pid = await ready(hold, child);
    child.kill("SIGKILL");
    await finish(child);
    await Deno.remove(hold);
    const tmp = join(dir, `.out.tinyq-tmp-${pid}`);
    const lock = join(dir, ".out.tinyq-lock");
    assert.deepEqual(
      [...(await tree(dir)).keys()].filter((k) => k.startsWith(".")),
      [".out.tinyq-lock", `.out.tinyq-tmp-${pid}/`],
      "kill -9 leaves them",
    );
    const r = await quantize(m, out);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stderr,
      `tinyq: note: removed the lock ${lock} of a run that no longer exists (process ${pid})\n` +
        `tinyq: note: removed ${tmp}, left by a run that no longer exists (process ${pid})\n`,
    );
    assert.deepEqual(await treeBut(dir, "out"), before);
  });
});

Deno.test("a run killed mid --force swap: the next run puts the previous output back, and does not replace it without --force", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, SMALL);
    const out = join(dir, "out");
    assert.equal((await quantize(m, out)).code, 0);
    const before = await tree(dir);
    const dead = await deadPid();
    const old = join(dir, `.out.tinyq-old-${dead}`);
    await Deno.rename(out, old);
    const r = await quantize(m, out);
    assert.equal(
      r.stderr,
      `tinyq: note: put back ${out}, which a dead run (process ${dead}) had moved to ${old} while replacing it\n` +
        `tinyq quantize: error: ${out}: already exists (use --force to replace it)\n`,
    );
    assert.equal(r.code, 1);
    assert.deepEqual(await tree(dir), before);
  });
});

// --- 3. two runs at once ----------------------------------------------------------

Deno.test("two runs for the same output: the second is refused with one line, the first finishes; other outputs beside it are not blocked", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, SMALL);
    const out = join(dir, "out");
    const hold = join(dir, "..", `${dir.split("/").pop()}-hold`);
    const first = spawnTinyq(["quantize", m, "--out", out], { hold });
    const pid = await ready(hold, first);
    const before = await tree(dir);
    for (const extra of [[], ["--force"]]) {
      const second = await tinyq(["quantize", m, "--out", out, ...extra]);
      assert.equal(
        second.stderr,
        `tinyq quantize: error: ${out}: another tinyq run (process ${pid}) is writing this output; wait for it to finish\n`,
      );
      assert.equal(second.code, 1);
      assert.equal(second.stdout, "");
    }
    const dq = await runMain(["quantize", m, "--out", out]);
    assert.equal(dq.code, 1);
    assert.deepEqual(
      await tree(dir),
      before,
      "the refused runs changed nothing",
    );
    const beside = await quantize(m, join(dir, "out2"));
    assert.equal(beside.code, 0, beside.stderr);
    await Deno.remove(hold);
    const r = await finish(first);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await names(dir), ["m", "out", "out2"]);
    using q = await Checkpoint.open(out);
    assert.equal(q.quantization?.method, "w8a16");
  });
});

Deno.test("two runs started at the same instant: exactly one gets the output, the other is refused by the lock", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, SMALL);
    const out = join(dir, "out");
    const hold = join(dir, "..", `${dir.split("/").pop()}-hold`);
    // Both race for the lock; the winner holds at its hold point, so the
    // loser, whenever it gets there, must meet the lock.
    const runs = [0, 1].map(() =>
      spawnTinyq(["quantize", m, "--out", out, "--force"], { hold })
    );
    const ended = runs.map((c) => finish(c));
    let winnerPid = 0;
    for (const deadline = Date.now() + 120_000; Date.now() < deadline;) {
      const text = await Deno.readTextFile(hold).catch(() => "");
      if (text.endsWith("\n")) {
        winnerPid = Number(text.trim());
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(runs.some((c) => c.pid === winnerPid), "one run holds");
    const loser = runs.find((c) => c.pid !== winnerPid)!;
    const lost = await ended[runs.indexOf(loser)]!;
    assert.equal(
      lost.stderr,
      `tinyq quantize: error: ${out}: another tinyq run (process ${winnerPid}) is writing this output; wait for it to finish\n`,
    );
    assert.equal(lost.code, 1);
    await Deno.remove(hold);
    const won = await ended[runs.findIndex((c) => c.pid === winnerPid)]!;
    assert.equal(won.code, 0, won.stderr);
    assert.deepEqual(await names(dir), ["m", "out"]);
  });
});

Deno.test("a stale lock (its process gone) is taken over with a note; a lock naming no process is refused", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, SMALL);
    const out = join(dir, "out");
    const lock = join(dir, ".out.tinyq-lock");
    const dead = await deadPid();
    await Deno.writeTextFile(lock, `${dead}\n${out}\n`);
    const r = await quantize(m, out);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stderr,
      `tinyq: note: removed the lock ${lock} of a run that no longer exists (process ${dead})\n`,
    );
    await Deno.writeTextFile(lock, "garbage");
    await assertNothingChanged(
      dir,
      `tinyq quantize: error: ${out}: is locked by ${lock}, which names no process; remove that file if no tinyq run is writing here`,
      () => quantize(m, out, "--force"),
    );
  });
});

Deno.test("an output name of 255 bytes works: its temporary, old and lock names stay within the limit", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, SMALL);
    for (const name of ["q".repeat(255), "é".repeat(127)]) {
      const out = join(dir, name);
      let r = await quantize(m, out);
      assert.equal(r.code, 0, r.stderr);
      r = await quantize(m, out, "--force");
      assert.equal(r.code, 0, r.stderr);
      for (const kind of ["tmp", "old", "lock"] as const) {
        const side = sidecarName(name, kind, 4194304);
        assert.ok(new TextEncoder().encode(side).length <= 255, side);
      }
      await Deno.remove(out, { recursive: true });
    }
    assert.notEqual(
      sidecarName("a".repeat(250) + "x", "tmp"),
      sidecarName("a".repeat(250) + "y", "tmp"),
    );
    assert.deepEqual(await names(dir), ["m"]);
  });
});

// --- 4. broken stdout / stderr ------------------------------------------------------

Deno.test("a closed stdout and stderr stop the report, never the work: the output is complete and the exit status is 0", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, SMALL);
    const hold = join(dir, "..", `${dir.split("/").pop()}-hold`);
    const out = join(dir, "out");
    const before = await tree(dir);
    // --verbose 2>&1 | head -1, --json | head -c 100: the reader goes away.
    const child = spawnTinyq(
      ["quantize", m, "--out", out, "--verbose", "--json"],
      { hold },
    );
    await ready(hold, child);
    await child.stdout.cancel();
    await child.stderr.cancel();
    await Deno.remove(hold);
    const status = await child.status;
    assert.equal(status.code, 0);
    assert.deepEqual(await treeBut(dir, "out"), before, "only the output");
    using q = await Checkpoint.open(out);
    assert.equal(q.quantization?.method, "w8a16");
  });
});

Deno.test("stdout on /dev/full: the work is done, exit 0, one warning on stderr", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, SMALL);
    const out = join(dir, "out");
    const before = await tree(dir);
    const cli = new URL("../cli.ts", import.meta.url).pathname;
    const r = await new Deno.Command("sh", {
      args: [
        "-c",
        `exec "$0" run -A "$1" quantize "$2" --out "$3" --json > /dev/full`,
        Deno.execPath(),
        cli,
        m,
        out,
      ],
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(r.stderr);
    assert.equal(
      stderr,
      "tinyq: warning: cannot write to stdout (No space left on device (os error 28)); the rest of the report is dropped, the work goes on\n",
    );
    assert.equal(r.code, 0);
    assert.deepEqual(await treeBut(dir, "out"), before, "only the output");
    using q = await Checkpoint.open(out);
    assert.equal(q.quantization?.method, "w8a16");
  });
});

Deno.test("main(): writes that throw (EPIPE on stdout, EIO on stderr) are dropped and the command's own status returned", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, SMALL);
    let outCalls = 0;
    let errCalls = 0;
    const io = {
      out: () => {
        outCalls++;
        throw new Deno.errors.BrokenPipe("Broken pipe (os error 32)");
      },
      err: () => {
        errCalls++;
        throw new Error("Input/output error (os error 5)");
      },
      errIsTerminal: true,
      columns: () => 80,
    };
    assert.equal(
      await main(["quantize", m, "--out", join(dir, "q"), "--verbose"], io),
      0,
    );
    assert.equal(outCalls, 1, "stdout is given up after the first failure");
    assert.equal(errCalls, 1, "so is stderr");
    assert.equal(await main(["quantize", m, "--out", join(dir, "q")], io), 1);
    assert.equal(await main(["inspect", m], io), 0);
  });
});

// --- 5. special files; 6. checked before the heavy work ----------------------------

Deno.test("FIFOs as model.safetensors, a shard, config.json or the index are refused at once, naming the file; no hang", async (t) => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    const cases: [string, string, (m: string) => Promise<void>][] = [
      ["model.safetensors", "model.safetensors", async (m) => {
        await Deno.remove(join(m, "model.safetensors.index.json"));
        await Deno.remove(join(m, "model-00001-of-00002.safetensors"));
        await Deno.remove(join(m, "model-00002-of-00002.safetensors"));
        await mkfifo(join(m, "model.safetensors"));
      }],
      [
        "a shard named by the index",
        "model-00002-of-00002.safetensors",
        async (m) => {
          await Deno.remove(join(m, "model-00002-of-00002.safetensors"));
          await mkfifo(join(m, "model-00002-of-00002.safetensors"));
        },
      ],
      ["config.json", "config.json", async (m) => {
        await Deno.remove(join(m, "config.json"));
        await mkfifo(join(m, "config.json"));
      }],
      [
        "quanto_qmap.json",
        "quanto_qmap.json",
        (m) => mkfifo(join(m, "quanto_qmap.json")),
      ],
      [
        "the index",
        "model.safetensors.index.json",
        async (m) => {
          await Deno.remove(join(m, "model.safetensors.index.json"));
          await mkfifo(join(m, "model.safetensors.index.json"));
        },
      ],
    ];
    for (const [name, file, edit] of cases) {
      await t.step(name, async () => {
        await Deno.remove(m, { recursive: true }).catch(() => {});
        await makeDemoCheckpoint(m, SMALL);
        await edit(m);
        const before = await tree(dir);
        // A real process, so that a hang is a failed test, not a stuck run.
        const r = await finish(
          spawnTinyq(["quantize", m, "--out", join(dir, "out")]),
          60_000,
        );
        assert.equal(
          r.stderr,
          `tinyq quantize: error: ${m}/${file}: is a FIFO, not a regular file; refused\n`,
        );
        assert.equal(r.code, 1);
        assert.deepEqual(await tree(dir), before);
      });
    }
    await t.step("the input itself", async () => {
      const fifo = join(dir, "in.safetensors");
      await mkfifo(fifo);
      const r = await finish(
        spawnTinyq(["inspect", fifo]),
        60_000,
      );
      assert.equal(
        r.stderr,
        `tinyq inspect: error: ${fifo}: is a FIFO, neither a regular file nor a folder\n`,
      );
      assert.equal(r.code, 1);
      await Deno.remove(fifo);
    });
  });
});

Deno.test("extra files that are not regular files (a FIFO, a device) are skipped with a note; the rest is copied", async () => {
  await withDir(async (dir) => {
    const m = join(dir, "m");
    await makeDemoCheckpoint(m, SMALL);
    await mkfifo(join(m, "pipe"));
    await Deno.mkdir(join(m, "sub"));
    await mkfifo(join(m, "sub", "pipe2"));
    await Deno.symlink("/dev/zero", join(m, "zero"));
    const device = (await new Deno.Command("mknod", {
      args: [join(m, "null"), "c", "1", "3"],
      stderr: "null",
    }).output()).success;
    const before = await tree(m);
    const r = await finish(
      spawnTinyq(["quantize", m, "--out", join(dir, "out")]),
      60_000,
    );
    assert.equal(r.code, 0, r.stderr);
    const notes = r.stdout.split("\n").filter((l) => l.includes("not copied"));
    assert.deepEqual(notes, [
      ...(device
        ? ["  not copied:   null (a device, not a regular file)"]
        : []),
      "  not copied:   pipe (a FIFO, not a regular file)",
      "  not copied:   sub/pipe2 (a FIFO, not a regular file)",
      '  not copied:   zero (the file "zero", a symlink to /dev/zero, outside the model folder; refused)',
    ]);
    assert.deepEqual(
      [...(await tree(join(dir, "out"))).keys()],
      [
        "config.json",
        "generation_config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "sub/",
        "tokenizer.json",
      ],
    );
    assert.deepEqual(await tree(m), before);
  });
});

/** The command prefix that runs a process as root without the right to ignore file permissions, or null. */
function withoutDacOverride(): string[] | null {
  if (Deno.uid() !== 0) return [];
  const probe = Deno.makeTempFileSync();
  try {
    Deno.chmodSync(probe, 0);
    // Usable when a process started this way cannot read a mode-000 file.
    const ok = new Deno.Command("capsh", {
      args: [
        "--drop=cap_dac_override,cap_dac_read_search",
        "--",
        "-c",
        `! cat "${probe}"`,
      ],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
    return ok
      ? [
        "capsh",
        "--drop=cap_dac_override,cap_dac_read_search",
        "--",
        "-c",
        'exec "$0" "$@"',
      ]
      : null;
  } catch {
    return null;
  } finally {
    Deno.removeSync(probe);
  }
}
const NO_DAC = withoutDacOverride();

Deno.test({
  name:
    `an unreadable tokenizer.json or unlistable subfolder fails before any shard is written, naming that file${
      NO_DAC ? "" : " (skipped: cannot drop file-permission override here)"
    }`,
  ignore: NO_DAC === null,
  fn: async () => {
    await withDir(async (dir) => {
      const m = join(dir, "m");
      await makeDemoCheckpoint(m, SMALL);
      await Deno.mkdir(join(m, "sub"));
      await Deno.writeTextFile(join(m, "sub", "a.txt"), "a");
      for (
        const [path, line] of [
          [
            join(m, "tokenizer.json"),
            `${m}/tokenizer.json: cannot read: Permission denied (os error 13)`,
          ],
          [
            join(m, "sub"),
            `${m}/sub: cannot list the folder: Permission denied (os error 13)`,
          ],
        ]
      ) {
        await Deno.chmod(path!, 0);
        const hold = join(dir, "..", `${dir.split("/").pop()}-hold`);
        const before = await tree(dir);
        const [cmd, ...pre] = NO_DAC!.length ? NO_DAC! : [Deno.execPath()];
        const r = await new Deno.Command(cmd!, {
          args: [
            ...pre,
            ...(NO_DAC!.length ? [Deno.execPath()] : []),
            "run",
            "-A",
            new URL("../cli.ts", import.meta.url).pathname,
            "quantize",
            m,
            "--out",
            join(dir, "out"),
          ],
          env: { TINYQ_TEST_HOLD: hold },
          stdout: "piped",
          stderr: "piped",
        }).output();
        await Deno.chmod(path!, 0o755);
        const stderr = new TextDecoder().decode(r.stderr);
        assert.equal(stderr, `tinyq quantize: error: ${line}\n`);
        assert.equal(r.code, 1);
        await Deno.chmod(path!, 0);
        assert.deepEqual(await tree(dir), before);
        await Deno.chmod(path!, 0o755);
        // The hold point (the temporary output made) was never reached.
        await assert.rejects(Deno.stat(hold), Deno.errors.NotFound);
      }
    });
  },
});
