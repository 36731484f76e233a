/**
 * `tinyq inspect`: what a checkpoint holds and what quantizing it would do.
 *
 * @module
 */

import { memberName } from "../member_name.ts";
import { getBackend } from "../backend/select.ts";
import { Checkpoint, formatLayer, type TensorPlan } from "../io/checkpoint.ts";
import { PytorchFile } from "../io/tensor_file.ts";
import type {
  CheckpointFormat,
  FormatLayer,
  FormatWarning,
} from "../io/formats/format.ts";
import { FORMATS } from "../io/formats/registry.ts";
import { TINYQ_VERSION } from "../io/formats/tinyq.ts";
import { specBytes } from "../io/formats/format.ts";
import { warnUnmatchedExcludes } from "./_exclude.ts";
import { flag, list, parseCommandArgs } from "./_args.ts";
import { formatFlag } from "./_flags.ts";
import type { CliIO } from "./_io.ts";
import { formatTable, humanBytes, mib, shape } from "./tables.ts";

/** `tinyq inspect --help`. */
export const INSPECT_HELP = `Usage: tinyq inspect <input> [options]

Lists the tensors of a checkpoint (safetensors, pytorch_model.bin, or a
Hugging Face id in the local cache): name, dtype, shape, bytes;
which ones quantize would convert and why (the model family's table from
config.json, or the generic rule), the quantization recorded in an already
quantized checkpoint (${
  FORMATS.map((f) => f.name).join(", ")
} formats) with the warnings of its
format, and the compute backend forward would use and why. Reads headers only
(and compressed-tensors' small weight_shape tensors).

Options:
  -x, --exclude <name>  preview an exclusion (module name or dotted-path glob); repeatable
      --format <name>   preview quantize --format <name> on a float checkpoint: the
                        layers that format keeps in float, its sizes and warnings
                        (${FORMATS.map((f) => f.name).join(", ")}; default ${
  FORMATS[0]!.name
})
      --json            print everything as JSON on stdout
  -v, --verbose         stack traces on errors
  -h, --help            show this help
`;

/** Float checkpoint: the plan under `format`, with the layers it keeps float. */
function planFor(
  ckpt: Checkpoint,
  exclude: readonly string[],
  format: CheckpointFormat,
): { plan: TensorPlan[]; layers: Map<string, FormatLayer> } {
  const layers = new Map<string, FormatLayer>(
    ckpt.linears().map((l) => [memberName(l.path, "weight"), formatLayer(l)]),
  );
  const plan = ckpt.plan(exclude).map((t): TensorPlan => {
    const l = layers.get(t.name);
    const why = t.action === "quantize" && l ? format.keepFloat?.(l) : null;
    return why ? { name: t.name, action: "exclude", reason: why } : t;
  });
  return { plan, layers };
}

/** Runs `tinyq inspect`; returns the exit code. */
export async function inspectCommand(
  args: readonly string[],
  io: CliIO,
): Promise<number> {
  const p = parseCommandArgs("inspect", args, {
    exclude: { type: "string", short: "x", multiple: true },
    format: { type: "string" },
    json: { type: "boolean" },
  }, {
    min: 1,
    max: 1,
    names: "<input> (a model folder, .safetensors or .bin file, or owner/name)",
  });
  if (flag(p, "help")) {
    io.out(INSPECT_HELP);
    return 0;
  }
  const asked = formatFlag("inspect", p);
  using ckpt = await Checkpoint.open(p.positionals[0]!);
  const q = ckpt.quantization;
  const already = ckpt.alreadyQuantized();
  // A quantized checkpoint speaks for its own format; a float one is
  // previewed in the format asked for.
  const format = ckpt.format ?? asked ?? FORMATS[0]!;
  const { plan, layers } = planFor(ckpt, list(p, "exclude"), format);
  warnUnmatchedExcludes(
    io,
    list(p, "exclude"),
    ckpt.linears().map((l) => l.path),
  );
  const backend = await getBackend().then(
    (b) => ({ name: b.name as string, reason: b.reason }),
    (e) => ({
      name: "none",
      reason: e instanceof Error ? e.message : String(e),
    }),
  );
  const rows = ckpt.entries.map((e, i) => ({
    name: e.name,
    dtype: e.info.safetensorsDtype,
    shape: [...e.info.shape],
    bytes: e.info.byteLength,
    shard: e.shard,
    action: plan[i]!.action,
    reason: plan[i]!.reason,
  }));
  const sum = (a: string) => rows.filter((r) => r.action === a);
  const toQuantize = sum("quantize");
  const totalBytes = rows.reduce((s, r) => s + r.bytes, 0);
  const qBytes = toQuantize.reduce((s, r) => s + r.bytes, 0);
  // What the format stores per layer (int8 values, scales, shape tensors…).
  const qAfter = toQuantize.reduce((s, r) => {
    const l = layers.get(r.name)!;
    const dtype = ckpt.entry(r.name)!.info.dtype;
    return s + format.linearTensors(l.path, l.outFeatures, l.inFeatures, dtype)
      .reduce((n, t) => n + specBytes(t), 0);
  }, 0);
  let warnings: FormatWarning[] = [];
  if (q) {
    warnings = format.warnings?.(
      q,
      q.modules.flatMap((m) => {
        const s = ckpt.quantizedShape(m);
        return s ? [{ path: m, outFeatures: s[0], inFeatures: s[1] }] : [];
      }),
    ) ?? [];
  } else if (!already) {
    const modules = toQuantize.map((r) => layers.get(r.name)!.path);
    warnings = format.warnings?.(
      {
        library: "tinyq",
        version: TINYQ_VERSION,
        method: "w8a16",
        bits: 8,
        granularity: "per-channel",
        symmetric: true,
        modules,
        excluded: sum("exclude").map((r) => layers.get(r.name)!.path),
        transposed: [],
      },
      toQuantize.map((r) => layers.get(r.name)!),
    ) ?? [];
  }
  const keptFloat = q
    ? []
    : rows.filter((r, i) =>
      r.action === "exclude" && plan[i]!.reason !== "matched --exclude"
    ).map((r) => ({ path: layers.get(r.name)!.path, reason: r.reason }));
  const formatNote = q && asked && asked !== ckpt.format
    ? `--format ${asked.name} ignored: this checkpoint is already in ${
      ckpt.format!.name
    } format`
    : null;
  if (flag(p, "json")) {
    io.out(
      JSON.stringify(
        {
          path: ckpt.path,
          kind: ckpt.kind,
          shards: ckpt.shardNames,
          family: ckpt.family,
          familySource: ckpt.familySource,
          format: q || !already ? format.name : null,
          quantization: q,
          alreadyQuantized: already,
          keptFloat,
          warnings,
          backend,
          tensors: rows,
          summary: {
            tensors: rows.length,
            bytes: totalBytes,
            quantize: toQuantize.length,
            exclude: sum("exclude").length,
            keep: sum("keep").length,
            quantized: q?.modules.length ?? 0,
            linearBytesBefore: qBytes,
            linearBytesAfter: qAfter,
          },
        },
        null,
        2,
      ) + "\n",
    );
    return 0;
  }
  let text =
    `${ckpt.path}: ${
      ckpt.kind === "file"
        ? "single file"
        : `folder, ${ckpt.shardNames.length} shard(s)`
    }, ` +
    `${rows.length} tensors, ${humanBytes(totalBytes)}${
      ckpt.shardNames.some((n) => ckpt.file(n) instanceof PytorchFile)
        ? " (PyTorch torch.save zip, read without running its pickle)"
        : ""
    }\n`;
  text += `family:   ${ckpt.family ?? "generic"} (${ckpt.familySource})\n`;
  if (q) {
    text += `format:   ${format.name}\n`;
    text += `quantization: ${q.library} ${q.version}, ` +
      `${q.method}, ${q.bits}-bit ${q.granularity}${
        q.groupSize ? ` (group size ${q.groupSize})` : ""
      } ` +
      `${q.symmetric ? "symmetric" : "asymmetric"}${
        q.activations ? `, activations ${q.activations}` : ""
      }, ${q.modules.length} modules quantized, ` +
      `${q.excluded.length} excluded${
        q.excluded.length ? ` (${q.excluded.join(", ")})` : ""
      }` +
      `${q.weightDtype ? `, original weights ${q.weightDtype}` : ""}\n`;
  } else if (already) {
    text += `quantization: ${already}\n`;
  } else {
    text += "quantization: none (float checkpoint)\n";
  }
  text += `backend:  ${backend.name} (${backend.reason})\n\n`;
  text += formatTable(
    ["tensor", "dtype", "shape", "bytes", "action", "why"],
    rows.map((
      r,
    ) => [
      r.name,
      r.dtype,
      shape(r.shape),
      humanBytes(r.bytes),
      r.action,
      r.reason,
    ]),
    ["left", "left", "left", "right", "left", "left"],
  );
  if (!q && !already) {
    text +=
      `\nquantize${
        asked ? ` --format ${format.name}` : ""
      } would convert ${toQuantize.length} Linear weights (${
        mib(qBytes)
      } MiB -> ${mib(qAfter)} MiB), ` +
      `exclude ${sum("exclude").length}, keep ${
        sum("keep").length
      } tensors as they are\n`;
    for (const k of keptFloat) {
      text += `note: ${k.path} would stay in float (${k.reason})\n`;
    }
  }
  if (formatNote) text += `\nnote: ${formatNote}\n`;
  if (warnings.length > 0) {
    text += `\n${warnings.length} ${format.name} warning(s)${
      q ? "" : " for that output"
    }:\n`;
    for (const w of warnings) text += `warning: ${w.message}\n`;
  }
  io.out(text);
  return 0;
}
