/**
 * What the quantize benchmark and the soak test share: the generated
 * Llama-shaped checkpoints, free-disk and `/usr/bin/time` checks, running the
 * real CLI.
 *
 * @module
 */

import {
  type DemoCheckpoint,
  llamaTensors,
  type SyntheticTensor,
  writeSyntheticCheckpoint,
} from "../src/demo/demo_checkpoint.ts";

/** Bytes in a GiB. */
export const GiB = 2 ** 30;

/**
 * Llama-like shapes: hidden 2048, 16 heads / 4 KV heads, MLP 5632, vocab
 * 32768, so the (tied) embedding is exactly 128 MiB in bf16 — the largest
 * tensor whatever the size — and each decoder layer 86 MiB.
 */
const SHAPE = {
  hidden: 2048,
  intermediate: 5632,
  heads: 16,
  kvHeads: 4,
  vocab: 32768,
  tieEmbeddings: true,
};

/** Bytes of the largest tensor of {@linkcode benchTensors} (the embedding). */
export const LARGEST_TENSOR: number = SHAPE.vocab * SHAPE.hidden * 2;

/** Tensors of a bf16 checkpoint of about `bytes` bytes. */
export function benchTensors(bytes: number): SyntheticTensor[] {
  const all = llamaTensors({ ...SHAPE, layers: 1 });
  const perLayer = all.filter((t) => t.name.startsWith("model.layers."))
    .reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1) * 2, 0);
  const layers = Math.max(1, Math.round((bytes - LARGEST_TENSOR) / perLayer));
  return llamaTensors({ ...SHAPE, layers });
}

/** Writes a benchmark checkpoint of about `gib` GiB in `shards` shards. */
export async function generate(
  dir: string,
  gib: number,
  shards: number,
): Promise<DemoCheckpoint> {
  const t0 = performance.now();
  const made = await writeSyntheticCheckpoint(dir, benchTensors(gib * GiB), {
    shards,
    files: {
      "config.json": JSON.stringify({
        model_type: "llama",
        architectures: ["LlamaForCausalLM"],
      }),
    },
  });
  console.log(
    `generated ${dir}: ${(made.bytes / GiB).toFixed(2)} GiB bf16, ` +
      `${made.tensors.length} tensors, ${made.shards.length} shard(s) in ` +
      `${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  return made;
}

/** Free bytes in the file system holding `dir` (df). */
export async function freeBytes(dir: string): Promise<number> {
  const out = await new Deno.Command("df", {
    args: ["-k", "--output=avail", dir],
  }).output();
  const kb = Number(
    new TextDecoder().decode(out.stdout).trim().split("\n").at(-1),
  );
  return Number.isFinite(kb) ? kb * 1024 : Infinity;
}

/** `/usr/bin/time`, installing Debian's `time` package when missing; null if impossible. */
export async function timeBinary(): Promise<string | null> {
  try {
    await Deno.stat("/usr/bin/time");
    return "/usr/bin/time";
  } catch {
    console.error("/usr/bin/time is missing; installing Debian's time package");
    const r = await new Deno.Command("sh", {
      args: [
        "-c",
        "apt-get install -y -qq time >/dev/null 2>&1 || " +
        "(apt-get update -qq && apt-get install -y -qq time >/dev/null)",
      ],
    }).output();
    return r.success ? "/usr/bin/time" : null;
  }
}

/** What one CLI run reported. */
export interface RunResult {
  /** Seconds the command reports for the quantization. */
  seconds: number;
  /** Wall seconds of the process, start-up included. */
  wall: number;
  /** Input bytes. */
  inputBytes: number;
  /** Peak resident memory, when measured. */
  rssBytes: number | null;
}

const CLI = new URL("../cli.ts", import.meta.url).pathname;

/** Runs `tinyq quantize input --out out --json …extra` (under `time -v` if given). */
export async function quantizeWithCli(
  input: string,
  out: string,
  timeBin: string | null,
  extra: readonly string[] = [],
): Promise<RunResult> {
  const args = [
    "run",
    "-A",
    CLI,
    "quantize",
    input,
    "--out",
    out,
    "--json",
    ...extra,
  ];
  const cmd = timeBin
    ? new Deno.Command(timeBin, {
      args: ["-v", Deno.execPath(), ...args],
      stdout: "piped",
      stderr: "piped",
    })
    : new Deno.Command(Deno.execPath(), {
      args,
      stdout: "piped",
      stderr: "piped",
    });
  const t0 = performance.now();
  const r = await cmd.output();
  const wall = (performance.now() - t0) / 1000;
  const stderr = new TextDecoder().decode(r.stderr);
  if (!r.success) throw new Error(`tinyq quantize failed: ${stderr}`);
  const summary = JSON.parse(new TextDecoder().decode(r.stdout));
  const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr);
  return {
    seconds: summary.seconds,
    wall,
    inputBytes: summary.inputBytes,
    rssBytes: rss ? Number(rss[1]) * 1024 : null,
  };
}

/** The median of `xs`. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
