/**
 * Issue 5's targets, measured side by side in one run: for each shape,
 * PyTorch's fp32 `F.linear` (bench/torch_linear.py, Debian's python3-torch,
 * 2 threads unless `--threads`) and then our CPU paths on the same number of
 * threads, with the ratios:
 *
 * - decode (m = 1): our time / PyTorch's time, target ≤ 1.0;
 * - prefill (m > 1): our throughput as a share of PyTorch's, target ≥ 10%.
 *
 *   deno run -A bench/compare_torch.ts [--threads 2] [--shapes 1x4096x4096,...]
 *       [--python /usr/bin/python3]
 *
 * Without PyTorch it says so and exits 0.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  measureShape,
  parseShapes,
  type Shape,
  shapeName,
  SHAPES,
  table,
} from "./_cpu_cases.ts";

interface TorchResult {
  shape: string;
  ms: number;
  ms_2d_input: number;
  ms_1d_input: number;
  torch: string;
}

async function torchMedian(
  python: string,
  shape: Shape,
  threads: number,
): Promise<TorchResult> {
  const script = new URL("./torch_linear.py", import.meta.url).pathname;
  const out = await new Deno.Command(python, {
    args: [script, "--threads", String(threads), shapeName(shape)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `torch_linear.py failed: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return JSON.parse(
    new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!,
  );
}

async function hasTorch(python: string): Promise<boolean> {
  try {
    const r = await new Deno.Command(python, {
      args: ["-c", "import torch"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return r.success;
  } catch {
    return false;
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      threads: { type: "string", default: "2" },
      shapes: { type: "string" },
      python: { type: "string", default: "/usr/bin/python3" },
    },
  });
  const threads = Number(values.threads);
  const shapes = values.shapes ? parseShapes(values.shapes) : SHAPES;
  if (!(await hasTorch(values.python))) {
    console.log(
      `PyTorch not found for ${values.python} (apt-get install python3-torch); nothing to compare`,
    );
    Deno.exit(0);
  }
  Deno.env.set("TINYQ_THREADS", String(threads));
  const rows = [[
    "shape",
    "path",
    "ms",
    "GFLOP/s",
    "vs PyTorch",
    "target",
    "met",
  ]];
  let version = "";
  for (const shape of shapes) {
    const torch = await torchMedian(values.python, shape, threads);
    version = torch.torch;
    const flop = 2 * shape.m * shape.k * shape.n;
    const decode = shape.m === 1;
    rows.push([
      shapeName(shape),
      `PyTorch fp32 F.linear (2-D ${torch.ms_2d_input.toFixed(2)}, 1-D ${
        torch.ms_1d_input.toFixed(2)
      })`,
      torch.ms.toFixed(2),
      (flop / torch.ms / 1e6).toFixed(1),
      "1.00",
      "",
      "",
    ]);
    const ours = await measureShape(shape, {
      oneThread: false,
      reference: false,
    });
    for (const r of ours) {
      const ratio = decode ? r.ms / torch.ms : torch.ms / r.ms;
      const int8 = r.path.startsWith("W8");
      rows.push([
        shapeName(shape),
        r.path,
        r.ms.toFixed(2),
        (flop / r.ms / 1e6).toFixed(1),
        decode
          ? `${ratio.toFixed(2)}× time`
          : `${(100 * ratio).toFixed(0)}% speed`,
        int8 ? (decode ? "≤ 1.00× time" : "≥ 10% speed") : "",
        int8 ? ((decode ? ratio <= 1 : ratio >= 0.1) ? "yes" : "NO") : "",
      ]);
    }
  }
  console.log(
    `PyTorch ${version} vs TinyQ CPU kernels, ${threads} threads each, medians (ms); decode compares time, prefill throughput`,
  );
  console.log(table(rows));
}
