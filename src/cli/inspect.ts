/**
 * `tinyq inspect`: what a checkpoint holds and what quantizing it would do.
 *
 * @module
 */

import { getBackend } from "../backend/select.ts";
import { Checkpoint } from "../io/checkpoint.ts";
import { flag, list, parseCommandArgs } from "./_args.ts";
import type { CliIO } from "./_io.ts";
import { formatTable, humanBytes, mib, shape } from "./tables.ts";

/** `tinyq inspect --help`. */
export const INSPECT_HELP = `Usage: tinyq inspect <input> [options]

Lists the tensors of a safetensors checkpoint (name, dtype, shape, bytes),
which ones quantize would convert and why (the model family's table from
config.json, or the generic rule), the quantization recorded in an already
quantized checkpoint, and the compute backend forward would use and why.
Reads headers only.

Options:
  -x, --exclude <name>  preview an exclusion (module name or dotted-path glob); repeatable
      --json            print everything as JSON on stdout
  -v, --verbose         stack traces on errors
  -h, --help            show this help
`;

/** Runs `tinyq inspect`; returns the exit code. */
export async function inspectCommand(
  args: readonly string[],
  io: CliIO,
): Promise<number> {
  const p = parseCommandArgs("inspect", args, {
    exclude: { type: "string", short: "x", multiple: true },
    json: { type: "boolean" },
    verbose: { type: "boolean", short: "v" },
  }, {
    min: 1,
    max: 1,
    names: "<input> (a model folder or .safetensors file)",
  });
  if (flag(p, "help")) {
    io.out(INSPECT_HELP);
    return 0;
  }
  using ckpt = await Checkpoint.open(p.positionals[0]!);
  const plan = ckpt.plan(list(p, "exclude"));
  const already = ckpt.alreadyQuantized();
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
  const outOf = new Map(
    ckpt.linears().map((l) => [`${l.path}.weight`, l.outFeatures!]),
  );
  // int8 values plus one f32 scale per output row.
  const qAfter = toQuantize.reduce(
    (s, r) => s + r.shape[0]! * r.shape[1]! + 4 * outOf.get(r.name)!,
    0,
  );
  if (flag(p, "json")) {
    io.out(
      JSON.stringify(
        {
          path: ckpt.path,
          kind: ckpt.kind,
          shards: ckpt.shardNames,
          family: ckpt.family,
          familySource: ckpt.familySource,
          quantization: ckpt.quantization,
          alreadyQuantized: already,
          backend,
          tensors: rows,
          summary: {
            tensors: rows.length,
            bytes: totalBytes,
            quantize: toQuantize.length,
            exclude: sum("exclude").length,
            keep: sum("keep").length,
            quantized: ckpt.quantization?.modules.length ?? 0,
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
    `${rows.length} tensors, ${humanBytes(totalBytes)}\n`;
  text += `family:   ${ckpt.family ?? "generic"} (${ckpt.familySource})\n`;
  const q = ckpt.quantization;
  if (q) {
    text +=
      `quantization: ${q.library} ${q.version}, ${q.method}, ${q.bits}-bit ${q.granularity} ` +
      `${
        q.symmetric ? "symmetric" : "asymmetric"
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
      `\nquantize would convert ${toQuantize.length} Linear weights (${
        mib(qBytes)
      } MiB -> ${mib(qAfter)} MiB), ` +
      `exclude ${sum("exclude").length}, keep ${
        sum("keep").length
      } tensors as they are\n`;
  }
  io.out(text);
  return 0;
}
