/**
 * Soak test (issue 6): a generated bf16 checkpoint of `--size` GiB (default
 * 4) in `--shards` shards (default 4) is quantized by the real CLI under
 * `/usr/bin/time -v`; the peak RSS must stay within 300 MB + 4 × the largest
 * tensor, and the output is verified tensor by tensor against the input:
 * every dequantized weight within scale/2 of the original (plus the f32
 * rounding of w / scale), every other tensor byte-identical, the index
 * complete. Not part of the default test run: `deno task soak` or
 * `deno run -A bench/soak.ts [--size 4] [--shards 4] [--dir /tmp]`.
 * Exits 1 on any failure.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { Checkpoint } from "../src/io/checkpoint.ts";
import {
  freeBytes,
  generate,
  GiB,
  LARGEST_TENSOR,
  quantizeWithCli,
  timeBinary,
} from "./_bench_util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    size: { type: "string", default: "4" },
    shards: { type: "string", default: "4" },
    dir: { type: "string", default: Deno.env.get("TMPDIR") ?? "/tmp" },
  },
  strict: true,
});
const size = Number(values.size);
const shards = Number(values.shards);
if (!(size > 0) || !Number.isInteger(shards) || shards < 1) {
  console.error(
    "soak: --size must be > 0 (GiB) and --shards a positive integer",
  );
  Deno.exit(2);
}
const free = await freeBytes(values.dir);
if (free < size * GiB * 1.7) {
  console.error(
    `soak: needs ${(size * 1.7).toFixed(1)} GiB free in ${values.dir}, has ` +
      `${(free / GiB).toFixed(1)} GiB; use --size or --dir`,
  );
  Deno.exit(1);
}

function bf16ToF32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < u.length; i++) u[i] = bits[i]! << 16;
  return out;
}

const root = await Deno.makeTempDir({ dir: values.dir, prefix: "tinyq-soak-" });
let failures = 0;
try {
  const input = join(root, "model");
  const output = join(root, "model-int8");
  const made = await generate(input, size, shards);
  const timeBin = await timeBinary();
  const run = await quantizeWithCli(input, output, timeBin);
  const bound = 300e6 + 4 * LARGEST_TENSOR;
  console.log(
    `quantized in ${run.seconds.toFixed(1)} s (${
      run.wall.toFixed(1)
    } s with start-up), ` +
      `${(run.inputBytes / 1e6 / run.seconds).toFixed(0)} MB/s`,
  );
  if (run.rssBytes === null) {
    console.log("peak RSS: not measured (no /usr/bin/time)");
  } else {
    const ok = run.rssBytes <= bound;
    if (!ok) failures++;
    console.log(
      `peak RSS ${(run.rssBytes / 1e6).toFixed(0)} MB, bound 300 MB + 4 × ` +
        `${(LARGEST_TENSOR / 2 ** 20).toFixed(0)} MiB = ${
          (bound / 1e6).toFixed(0)
        } MB: ` +
        (ok ? "ok" : "OVER"),
    );
  }

  const t0 = performance.now();
  using src = await Checkpoint.open(input);
  using out = await Checkpoint.open(output);
  const modules = new Set(out.quantization?.modules ?? []);
  let worst = 0;
  let verified = 0;
  let identical = 0;
  for (const e of src.entries) {
    const path = e.name.endsWith(".weight") ? e.name.slice(0, -7) : null;
    if (path !== null && modules.has(path)) {
      const w = bf16ToF32((await src.read(e.name)).data as Uint16Array);
      const q = (await out.read(`${path}.int8_weights`)).data as Int8Array;
      const s = (await out.read(`${path}.scales`)).data as Float32Array;
      const cols = e.info.shape[1]!;
      for (let r = 0; r < s.length; r++) {
        const scale = s[r]!;
        for (let c = 0, i = r * cols; c < cols; c++, i++) {
          const v = w[i]!;
          const err = Math.abs(v - q[i]! * scale);
          // scale/2 from rounding, plus the f32 rounding of v / scale.
          const ratio = err / (scale / 2 + Math.abs(v) * 2 ** -23);
          if (ratio > worst) worst = ratio;
        }
      }
      verified++;
    } else {
      const a = await src.file(e.shard).readBytes(e.name);
      const o = out.entry(e.name);
      const b = o ? await out.file(o.shard).readBytes(e.name) : null;
      if (
        !b || b.byteLength !== a.byteLength || !a.every((x, i) => x === b[i])
      ) {
        console.log(`  changed: ${e.name}`);
        failures++;
      } else identical++;
    }
  }
  if (worst > 1) failures++;
  const index = JSON.parse(
    await Deno.readTextFile(join(output, "model.safetensors.index.json")),
  );
  const names = out.entries.map((e) => e.name);
  const total = out.entries.reduce((n, e) => n + e.info.byteLength, 0);
  if (
    index.metadata.total_size !== total ||
    Object.keys(index.weight_map).length !== names.length
  ) {
    console.log("  index.json does not match the shards");
    failures++;
  }
  console.log(
    `verified ${verified} quantized weights (worst error ${
      worst.toFixed(3)
    } × scale/2) ` +
      `and ${identical} byte-identical tensors of ${made.tensors.length} in ` +
      `${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s; ${out.shardNames.length} output shards`,
  );
} finally {
  await Deno.remove(root, { recursive: true }).catch(() => {});
}
console.log(
  failures === 0 ? "soak: PASS" : `soak: FAIL (${failures} problems)`,
);
Deno.exit(failures === 0 ? 0 : 1);
