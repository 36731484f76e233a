/**
 * `tinyq dequantize`: a quantized checkpoint (tinyq, compressed-tensors or
 * optimum-quanto format) back to plain floats.
 *
 * @module
 */

import { dequantizeCheckpoint } from "../io/dequantize_checkpoint.ts";
import type { FloatDType } from "../dtype.ts";
import { flag, parseCommandArgs, str } from "./_args.ts";
import { maxShardSizeFlag, outFlag } from "./_flags.ts";
import { type CliIO, UsageError } from "./_io.ts";
import { withProgress } from "./progress.ts";
import { tensorLine } from "./quantize.ts";
import { mib, seconds } from "./tables.ts";

/** `tinyq dequantize --help`. */
export const DEQUANTIZE_HELP =
  `Usage: tinyq dequantize <input> --out <path> [options]

Turns a quantized checkpoint back into a plain float checkpoint any
safetensors loader reads. It reads every format 'tinyq quantize --format'
writes, whoever wrote it: tinyq (int8_weights + scales [+ zero_points], or
int4_weights + group scales [+ zero_points] for w4a16), compressed-tensors
pack-quantized int8 (weight_packed + weight_scale + weight_shape) and
optimum-quanto qint8 (weight._data + weight._scale, quanto_qmap.json). Each
quantized Linear becomes weight = (q - zero point) * scale, per row or per
4-bit group (GPT-2's Conv1D weights back in
[in, out]); the quantization metadata, config.json's quantization_config and
quanto_qmap.json are removed.

Options:
  -o, --out <path>          output folder (or file); required
      --dtype <d>           f32, f16 or bf16: every float tensor (embeddings,
                            norms, biases too) in that dtype, and config.json's
                            torch_dtype set to it (default: the restored weights
                            in the original dtype, the rest unchanged)
      --max-shard-size <s>  re-shard the output (e.g. 2GB)
  -f, --force               replace a previous TinyQ output there (never
                            other files or folders: those are refused)
      --json                print the summary as JSON on stdout
  -v, --verbose             one line per tensor; stack traces on errors
  -h, --help                show this help
`;

/** Runs `tinyq dequantize`; returns the exit code. */
export async function dequantizeCommand(
  args: readonly string[],
  io: CliIO,
): Promise<number> {
  const p = parseCommandArgs("dequantize", args, {
    out: { type: "string", short: "o" },
    dtype: { type: "string" },
    "max-shard-size": { type: "string" },
    force: { type: "boolean", short: "f" },
    json: { type: "boolean" },
  }, {
    min: 1,
    max: 1,
    names: "<input> (a quantized model folder or .safetensors file)",
  });
  if (flag(p, "help")) {
    io.out(DEQUANTIZE_HELP);
    return 0;
  }
  const out = outFlag("dequantize", p);
  const dtypeText = str(p, "dtype")?.toLowerCase();
  if (dtypeText !== undefined && !["f32", "f16", "bf16"].includes(dtypeText)) {
    throw new UsageError(
      "dequantize",
      `unknown --dtype "${str(p, "dtype")}"; expected f32, f16 or bf16`,
    );
  }
  const maxShardSize = maxShardSizeFlag("dequantize", p);
  const verbose = flag(p, "verbose");
  const r = await withProgress(
    io,
    "dequantize",
    (bar) =>
      dequantizeCheckpoint(p.positionals[0]!, out, {
        ...(dtypeText ? { dtype: dtypeText as FloatDType } : {}),
        maxShardSize,
        force: flag(p, "force"),
        onProgress: (s) => bar.update(s),
        onTensor: verbose
          ? (e) => bar.log(tensorLine(e, dtypeText ?? "float"))
          : undefined,
      }),
  );
  if (flag(p, "json")) {
    io.out(JSON.stringify(r, null, 2) + "\n");
  } else {
    io.out(
      `tinyq: dequantized ${r.input} -> ${r.output}\n` +
        `  layers:  ${r.dequantized.length} restored to ${r.dtype}\n` +
        (r.converted > 0
          ? `  others:  ${r.converted} float tensor(s) converted to ${r.dtype}\n`
          : "") +
        `  size:    ${mib(r.inputBytes)} MiB -> ${mib(r.outputBytes)} MiB\n` +
        `  time:    ${seconds(r.seconds)}\n` +
        `  output:  ${r.shards.length} shard(s)\n`,
    );
  }
  return 0;
}
