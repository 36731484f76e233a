/**
 * `tinyq quantize`: a checkpoint folder (or file) in, a quantized one out.
 *
 * @module
 */

import { moduleLabel } from "../member_name.ts";
import {
  quantizeCheckpoint,
  type QuantizeResult,
  type TensorEvent,
} from "../io/quantize_checkpoint.ts";
import { FORMATS } from "../io/formats/registry.ts";
import { flag, list, parseCommandArgs, str } from "./_args.ts";
import { warnUnmatchedExcludes } from "./_exclude.ts";
import { escapeControls } from "./_safe_io.ts";
import {
  checkFormatMethod,
  formatFlag,
  maxShardSizeFlag,
  outFlag,
} from "./_flags.ts";
import { type CliIO, UsageError } from "./_io.ts";
import { parseMethodFlags } from "./_method.ts";
import { describeScheme } from "../quant/schemes.ts";
import { withProgress } from "./progress.ts";
import { mib, seconds, shape } from "./tables.ts";

/** `tinyq quantize --help`. */
export const QUANTIZE_HELP =
  `Usage: tinyq quantize <input> --out <path> [options]

Quantizes the Linear layers of a checkpoint (int8 with one f32 scale per
output channel, or 4-bit in groups along the input) and writes a new
safetensors checkpoint, streaming a block of rows at a time. <input> is a
model folder (model.safetensors, or shards + model.safetensors.index.json;
pytorch_model.bin, or shards + pytorch_model.bin.index.json, whose pickles
are read without running anything), one .safetensors or .bin file, or a
Hugging Face id owner/name[@revision] already in the local cache
($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub; nothing is
downloaded). The output keeps the shard plan, gets config.json with
a quantization_config block and the input folder's other files; it appears
only when complete. Embeddings, norms and 1-D tensors are never quantized;
which tensors are Linear comes from config.json's model_type (llama, mistral,
qwen2, gemma, phi3, gpt2, opt, codegen, bert) or a generic rule (see 'tinyq
inspect'). A config.json that is not valid JSON is an error, not a silent
fallback.

Options:
  -o, --out <path>          output folder (or file, for a file input); required
  -m, --method <m>          w8a16 (default), w8a32 or w8a8: the same int8
                            weights (one f32 scale per output row), with f16/bf16,
                            f32 or int8 per-token activations at forward time;
                            w4a16: 4-bit weights, one f32 scale per group of
                            inputs (about 4.25 bits per weight at group 128)
  -g, --group-size <n>      inputs per 4-bit group, w4a16 only: 32, 64 or 128
                            (default 128); a layer whose input size it does not
                            divide stays in float, named in a note (quanto
                            lowers the group size for it instead)
      --asymmetric          store zero points: per row (int8) or per group
                            (int4), for weights not centred on 0
                            ('tinyq eval <input>' compares every scheme)
  -x, --exclude <name>      leave a Linear in float: a module name (lm_head) or
                            a glob over dotted paths (model.layers.*.mlp.down_proj,
                            ** crosses dots), or its weight's tensor name
                            (lm_head.weight); repeatable; one that matches
                            no Linear layer is a warning
      --max-shard-size <s>  re-shard the output (e.g. 2GB, 500MB, 1GiB)
      --format <name>       output layout, one of ${
    FORMATS.map((f) => f.name).join(", ")
  }
                            (default ${FORMATS[0]!.name}):
                            tinyq: TinyQ's own (every --method);
                            compressed-tensors: what 'vllm serve <out>' loads:
                              pack-quantized int8 (w8a16/w8a32) or 4-bit
                              groups (w4a16, --asymmetric too), int-quantized
                              W8A8 with dynamic per-token activations (w8a8);
                              lm_head stays float (vLLM loads it unquantized);
                              warns of layers vLLM's Marlin kernel may refuse;
                            quanto: optimum-quanto qint8 + quanto_qmap.json
                              (w8a16/w8a32); GPT-2 Conv1D layers stay float
                              (quanto swaps only nn.Linear)
      --force-mixed         compressed-tensors: write q/k/v_proj or gate/up_proj
                            excluded in part although vLLM refuses that (by
                            default an exact name splitting such a group is an
                            error, and a glob naming a member excludes the
                            whole group, with a note)
  -n, --dry-run             print what would be quantized, excluded and kept,
                            the output's size and files and the warnings;
                            write nothing
  -f, --force               replace a previous TinyQ output there (never
                            other files or folders: those are refused)
      --json                print the summary as JSON on stdout
  -v, --verbose             one line per tensor; stack traces on errors
  -h, --help                show this help

Exit status: 0 done, 1 bad input or failure (one line on stderr), 2 usage
error, 128+n on signal n (130 SIGINT, 143 SIGTERM; the partial output is
removed). A closed or full stdout stops the report, not the work.
Example:
  tinyq quantize ./Llama-3.2-1B --out ./Llama-3.2-1B-int8 --exclude lm_head
`;

/** Bits per weight of `bytes` over `params` elements. */
function bpw(bytes: number, params: number): string {
  return params > 0 ? ((bytes * 8) / params).toFixed(2) : "0.00";
}

/** The closing summary, llama.cpp style. */
export function formatQuantizeSummary(r: QuantizeResult): string {
  const n = (k: number, word: string) => `${k} ${word}${k === 1 ? "" : "s"}`;
  const lines = [
    `tinyq: quantized ${r.input} -> ${r.output}`,
    `  family:       ${r.family ?? "generic"} (${r.familySource})`,
    `  layers:       ${
      n(r.quantized.length, "Linear layer")
    } quantized (${r.method}, ${describeScheme(r.scheme)}), ` +
    `${r.excluded.length} excluded${
      r.excluded.length
        ? ` (${
          r.excluded.slice(0, 4).map((p) =>
            escapeControls(moduleLabel(p), false)
          )
            .join(", ")
        }${r.excluded.length > 4 ? ", …" : ""})`
        : ""
    }, ` +
    `${n(r.kept, "tensor")} kept as is`,
    `  model size:   ${mib(r.inputBytes)} MiB (${
      bpw(r.inputBytes, r.parameters)
    } BPW)`,
    `  quant size:   ${mib(r.outputBytes)} MiB (${
      bpw(r.outputBytes, r.parameters)
    } BPW)`,
    `  Linear weights: ${mib(r.quantizedBytesBefore)} MiB -> ${
      mib(r.quantizedBytesAfter)
    } MiB ` +
    `(${bpw(r.quantizedBytesBefore, r.quantizedParameters)} -> ${
      bpw(r.quantizedBytesAfter, r.quantizedParameters)
    } bits per weight, scales included)`,
    `  time:         ${seconds(r.seconds)} (${
      (r.inputBytes / 1e6 / Math.max(r.seconds, 1e-9)).toFixed(1)
    } MB/s)`,
    `  output:       ${n(r.shards.length, "shard")} (${r.format} format)${
      r.copied.length ? `, copied ${r.copied.join(", ")}` : ""
    }`,
  ];
  for (const s of r.skipped) lines.push(`  not copied:   ${s}`);
  return lines.join("\n") + "\n";
}

/** What `quantize --dry-run` prints: the plan, nothing done. */
export function formatDryRun(r: QuantizeResult): string {
  const why = new Map(r.keptFloat.map((k) => [k.path, k.reason]));
  const lines = [
    `tinyq: dry run, nothing written: quantize ${r.input} -> ${r.output}`,
    `  family:     ${r.family ?? "generic"} (${r.familySource})`,
    `  quantize:   ${r.quantized.length} Linear layer(s) (${r.method}, ${
      describeScheme(r.scheme)
    })`,
    ...r.quantized.map((p) => `    ${p}`),
    `  exclude:    ${r.excluded.length} Linear layer(s) left in float`,
    ...r.excluded.map((p) =>
      `    ${p} (${why.has(p) ? why.get(p) : "matched --exclude"})`
    ),
    `  keep:       ${r.kept - r.excluded.length} other tensor(s) as they are`,
    `  size:       ${mib(r.inputBytes)} MiB -> ${mib(r.outputBytes)} MiB (${
      bpw(r.inputBytes, r.parameters)
    } -> ${bpw(r.outputBytes, r.parameters)} BPW)`,
    `  output:     ${r.output} (${r.format} format): ${
      [...r.shards, ...(r.files ?? [])].join(", ")
    }`,
  ];
  if (r.copied.length) lines.push(`  copy:       ${r.copied.join(", ")}`);
  for (const s of r.skipped) lines.push(`  not copied: ${s}`);
  if (r.outputExists) {
    lines.push(`  note:       ${r.output} exists; the real run needs --force`);
  }
  for (const n of r.notes ?? []) lines.push(`  note:       ${n}`);
  for (const w of r.warnings) lines.push(`  warning:    ${w.message}`);
  return lines.join("\n") + "\n";
}

/**
 * The stderr lines about the output format: layers it keeps in float, and
 * what may stop the engines that load it from serving the output.
 */
export function formatNotes(
  r: Pick<QuantizeResult, "format" | "keptFloat" | "warnings" | "notes">,
): string {
  // A model of odd shapes could print a line per layer: the first few say
  // what is wrong, --json and 'tinyq inspect' list them all.
  const shown = r.warnings.length > 10 ? r.warnings.slice(0, 8) : r.warnings;
  return [
    ...(r.notes ?? []).map((n) => `tinyq: note: ${n}\n`),
    ...r.keptFloat.map((k) =>
      `tinyq: note: ${moduleLabel(k.path)} stays in float (${
        k.cause === "group-size" ? "" : `${r.format}: `
      }${k.reason})\n`
    ),
    ...shown.map((w) => `tinyq: warning: ${w.message}\n`),
    ...(shown.length < r.warnings.length
      ? [
        `tinyq: warning: … and ${
          r.warnings.length - shown.length
        } more (all of them in --json and 'tinyq inspect <out>')\n`,
      ]
      : []),
  ].join("");
}

/** The JSON summary: the result plus the derived figures. */
export function quantizeJson(r: QuantizeResult): Record<string, unknown> {
  return {
    ...r,
    bitsPerWeightBefore: r.parameters ? (r.inputBytes * 8) / r.parameters : 0,
    bitsPerWeightAfter: r.parameters ? (r.outputBytes * 8) / r.parameters : 0,
    megabytesPerSecond: r.inputBytes / 1e6 / Math.max(r.seconds, 1e-9),
  };
}

/** One llama.cpp-style line per tensor. */
export function tensorLine(e: TensorEvent, converted = "i8"): string {
  const w = String(e.total).length;
  // A name is one line: its own newlines are escaped too.
  const head = `[${String(e.index).padStart(w)}/${e.total}] ${
    escapeControls(e.name, false)
  } - ${shape(e.shape)}, type = ${e.dtype}`;
  if (e.action === "quantized" || e.action === "dequantized") {
    return `${head}, converting to ${converted} .. size = ${
      mib(e.bytesIn)
    } MiB -> ${mib(e.bytesOut)} MiB`;
  }
  return `${head}, ${e.action === "excluded" ? "excluded, " : ""}size = ${
    mib(e.bytesIn)
  } MiB`;
}

/** Runs `tinyq quantize`; returns the exit code. */
export async function quantizeCommand(
  args: readonly string[],
  io: CliIO,
): Promise<number> {
  const p = parseCommandArgs("quantize", args, {
    out: { type: "string", short: "o" },
    method: { type: "string", short: "m" },
    "group-size": { type: "string", short: "g" },
    asymmetric: { type: "boolean" },
    exclude: { type: "string", short: "x", multiple: true },
    "max-shard-size": { type: "string" },
    format: { type: "string" },
    force: { type: "boolean", short: "f" },
    json: { type: "boolean" },
    "dry-run": { type: "boolean", short: "n" },
    "force-mixed": { type: "boolean" },
  }, {
    min: 1,
    max: 1,
    names: "<input> (a model folder, .safetensors or .bin file, or owner/name)",
  });
  if (flag(p, "help")) {
    io.out(QUANTIZE_HELP);
    return 0;
  }
  const out = outFlag("quantize", p);
  const { method: methodText, groupSize } = parseMethodFlags(
    "quantize",
    str(p, "method"),
    str(p, "group-size"),
  );
  const maxShardSize = maxShardSizeFlag("quantize", p);
  const format = formatFlag("quantize", p) ?? FORMATS[0]!;
  checkFormatMethod("quantize", format, methodText, {
    ...(groupSize !== undefined ? { groupSize } : {}),
    asymmetric: flag(p, "asymmetric"),
  });
  const exclude = list(p, "exclude");
  if (exclude.some((x) => x === "")) {
    throw new UsageError("quantize", "--exclude needs a module name or glob");
  }
  const verbose = flag(p, "verbose");
  if (flag(p, "dry-run")) {
    const plan = await quantizeCheckpoint(p.positionals[0]!, out, {
      method: methodText,
      ...(groupSize !== undefined ? { groupSize } : {}),
      asymmetric: flag(p, "asymmetric"),
      exclude,
      maxShardSize,
      force: flag(p, "force"),
      format,
      forceMixed: flag(p, "force-mixed"),
      dryRun: true,
    });
    io.out(
      flag(p, "json")
        ? JSON.stringify(quantizeJson(plan), null, 2) + "\n"
        : formatDryRun(plan),
    );
    return 0;
  }
  const result = await withProgress(
    io,
    "quantize",
    (bar) =>
      quantizeCheckpoint(p.positionals[0]!, out, {
        method: methodText,
        ...(groupSize !== undefined ? { groupSize } : {}),
        asymmetric: flag(p, "asymmetric"),
        exclude,
        maxShardSize,
        force: flag(p, "force"),
        format,
        forceMixed: flag(p, "force-mixed"),
        onProgress: (s) => bar.update(s),
        onTensor: verbose
          ? (e) =>
            bar.log(tensorLine(e, methodText === "w4a16" ? "int4" : "i8"))
          : undefined,
      }),
  );
  warnUnmatchedExcludes(io, exclude, [...result.quantized, ...result.excluded]);
  io.err(formatNotes(result));
  io.out(
    flag(p, "json")
      ? JSON.stringify(quantizeJson(result), null, 2) + "\n"
      : formatQuantizeSummary(result),
  );
  return 0;
}
