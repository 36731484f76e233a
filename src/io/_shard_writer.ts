/**
 * The shard writer of the checkpoint layer (one safetensors file). A shard is planned as a list of
 * units in input order — a tensor copied byte for byte, a Linear quantized
 * from its float weight, or tensors produced in memory — and laid out the way
 * the reference writer does (descending element size, so every tensor is
 * aligned for memory-mapping readers). The header goes first, then each unit
 * is computed in input order and its bytes written at their offsets.
 *
 * Reads are large positioned reads, issued ahead of the computation; writes
 * are queued so that the disk works while the next block is quantized.
 * Copies and quantization go in blocks of about {@linkcode CHUNK} bytes, so
 * memory stays flat however large a tensor or a shard is.
 *
 * @module
 */

import { DTYPE_SIZE, type FloatDType } from "../dtype.ts";
import { NonFiniteWeightError } from "../quant/quantize_rows.ts";
import { INT8_SYMMETRIC, layoutOf } from "../quant/schemes.ts";
import type { TensorInfo } from "./safetensors.ts";
import {
  type CheckpointFormat,
  specBytes,
  type TensorSpec,
  type WeightScheme,
} from "./formats/format.ts";
import { CheckpointError, osReason } from "./checkpoint_error.ts";
import { encodeStoredRows } from "./_quantized_rows.ts";
import { type Readers, SerialFile } from "./_serial_file.ts";
import { encodeHeader, layoutOrder } from "./_shard_header.ts";

/** Bytes per read/quantize block. */
export const CHUNK: number = 16 * 2 ** 20;
/** Blocks read ahead of the one being computed. */
const LOOKAHEAD = 2;
/** Written bytes allowed in flight before the computation waits. */
const MAX_WRITE_BACKLOG = 48 * 2 ** 20;

/** Where a tensor's bytes are in an input file. */
export interface Source {
  /** The input file to open. */
  readonly path: string;
  /** The tensor's entry in that file. */
  readonly info: TensorInfo;
}

/** One unit of output. */
export type Unit =
  | { readonly kind: "copy"; readonly spec: TensorSpec; readonly src: Source }
  | {
    readonly kind: "quantize";
    readonly path: string;
    readonly specs: readonly TensorSpec[];
    readonly src: Source;
    readonly transposed: boolean;
    readonly outFeatures: number;
    readonly inFeatures: number;
    readonly dtype: FloatDType;
    /** How to store it (default int8 per-channel symmetric). */
    readonly scheme?: WeightScheme;
  }
  | {
    readonly kind: "produce";
    readonly label: string;
    readonly specs: readonly TensorSpec[];
    readonly produce: () => Promise<Uint8Array[]>;
  };

/** The tensors a unit writes. */
export function unitSpecs(u: Unit): readonly TensorSpec[] {
  return u.kind === "copy" ? [u.spec] : u.specs;
}

/** Progress callbacks of {@linkcode writeShard}. */
export interface EmitHooks {
  /** Input bytes consumed (read and processed). */
  onBytes?: (bytes: number) => void;
  /** A unit is complete. */
  onUnit?: (unit: Unit) => void;
}

type Step =
  | { unit: Unit & { kind: "copy" }; pos: number; length: number }
  | {
    unit: Unit & { kind: "quantize" };
    rowStart: number;
    rows: number;
    length: number;
  }
  | { unit: Unit & { kind: "produce" } };

function stepsOf(units: readonly Unit[]): Step[] {
  const steps: Step[] = [];
  for (const u of units) {
    if (u.kind === "copy") {
      const len = u.src.info.byteLength;
      if (len === 0) steps.push({ unit: u, pos: 0, length: 0 });
      for (let pos = 0; pos < len; pos += CHUNK) {
        steps.push({ unit: u, pos, length: Math.min(CHUNK, len - pos) });
      }
    } else if (u.kind === "quantize") {
      const rowBytes = u.inFeatures * DTYPE_SIZE[u.dtype];
      const block = u.transposed || rowBytes === 0
        ? u.outFeatures
        : Math.max(1, Math.floor(CHUNK / rowBytes));
      if (u.outFeatures === 0) {
        steps.push({ unit: u, rowStart: 0, rows: 0, length: 0 });
      }
      for (let r = 0; r < u.outFeatures; r += block) {
        const rows = Math.min(block, u.outFeatures - r);
        steps.push({ unit: u, rowStart: r, rows, length: rows * rowBytes });
      }
    } else {
      steps.push({ unit: u });
    }
  }
  return steps;
}

function floatView(
  bytes: Uint8Array,
  dtype: FloatDType,
): Float32Array | Float16Array | Uint16Array {
  const b = bytes.buffer as ArrayBuffer;
  const o = bytes.byteOffset;
  switch (dtype) {
    case "f32":
      return new Float32Array(b, o, bytes.byteLength / 4);
    case "f16":
      return new Float16Array(b, o, bytes.byteLength / 2);
    case "bf16":
      return new Uint16Array(b, o, bytes.byteLength / 2);
  }
}

/** [rows, cols] → [cols, rows], any 2- or 4-byte element type. */
function transpose(
  src: Float32Array | Float16Array | Uint16Array,
  rows: number,
  cols: number,
): Float32Array | Float16Array | Uint16Array {
  const dst = new (src.constructor as new (n: number) => typeof src)(
    src.length,
  );
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) dst[c * rows + r] = src[base + c]!;
  }
  return dst;
}

/**
 * Quantizes a block of rows under the unit's scheme and encodes it in
 * `format`: one byte array per tensor of the unit. Every scheme works row by
 * row (int4 groups run along a row), so blocks of whole rows give the bytes
 * of the whole matrix. A NaN or ±Inf is reported as a
 * {@linkcode CheckpointError} naming the file, the tensor and the element's
 * index in the tensor as stored (not in the block, nor transposed).
 */
function quantizeBlock(
  data: Float32Array | Float16Array | Uint16Array,
  u: Unit & { kind: "quantize" },
  rowStart: number,
  rows: number,
  format: CheckpointFormat,
): Uint8Array[] {
  const cols = u.inFeatures;
  const name = u.src.info.name;
  const scheme = u.scheme;
  const at = {
    path: u.path,
    outFeatures: u.outFeatures,
    inFeatures: u.inFeatures,
    rowStart,
    rows,
    sourceDtype: u.dtype,
  };
  try {
    // The layer's own quantize(): its layout's row quantizer, on this block.
    const stored = layoutOf(scheme ?? INT8_SYMMETRIC).quantizeRows(
      data,
      u.dtype,
      rows,
      cols,
      {
        asymmetric: scheme ? !scheme.symmetric : false,
        groupSize: scheme?.groupSize ?? null,
        name,
      },
    );
    return encodeStoredRows(format, at, scheme, stored);
  } catch (e) {
    if (!(e instanceof NonFiniteWeightError)) throw e;
    const bf16 = new Float32Array(1);
    const bits = new Uint32Array(bf16.buffer);
    for (let i = 0; i < rows * cols; i++) {
      let v: number;
      if (u.dtype === "bf16") {
        bits[0] = data[i]! << 16;
        v = bf16[0]!;
      } else v = data[i]!;
      if (!Number.isFinite(v)) {
        const r = rowStart + Math.floor(i / cols);
        const c = i % cols;
        const at = u.transposed ? `[${c}, ${r}]` : `[${r}, ${c}]`;
        throw new CheckpointError(
          u.src.path,
          `has ${v} at ${at}; cannot quantize a non-finite weight`,
          name,
          {
            cause: e,
          },
        );
      }
    }
    throw e;
  }
}

/**
 * Writes one shard at `path` (created or truncated). `display` names the
 * file in error messages (the destination the user asked for).
 */
export async function writeShard(
  path: string,
  display: string,
  units: readonly Unit[],
  metadata: ReadonlyMap<string, string>,
  format: CheckpointFormat,
  readers: Readers,
  hooks: EmitHooks = {},
): Promise<void> {
  const specs = units.flatMap((u) => [...unitSpecs(u)]);
  const ordered = layoutOrder(specs);
  const offsets: number[] = [];
  let pos = 0;
  for (const s of ordered) {
    offsets.push(pos);
    pos += specBytes(s);
  }
  const header = encodeHeader(ordered, offsets, metadata);
  const base = header.byteLength;
  const cursor = new Map<string, { at: number; end: number }>();
  ordered.forEach((s, i) => {
    cursor.set(s.name, {
      at: base + offsets[i]!,
      end: base + offsets[i]! + specBytes(s),
    });
  });

  let handle: Deno.FsFile;
  try {
    handle = await Deno.open(path, {
      write: true,
      create: true,
      truncate: true,
    });
  } catch (e) {
    throw new CheckpointError(display, `cannot create: ${osReason(e)}`);
  }
  const out = new SerialFile(handle, display);
  let backlog = 0;
  let writeError: unknown = null;
  const write = async (at: number, bytes: Uint8Array): Promise<void> => {
    if (writeError) throw writeError;
    if (bytes.byteLength === 0) return;
    backlog += bytes.byteLength;
    out.run(async (h) => {
      try {
        await h.seek(at, Deno.SeekMode.Start);
        let done = 0;
        while (done < bytes.byteLength) {
          done += await h.write(bytes.subarray(done));
        }
      } catch (e) {
        writeError ??= new CheckpointError(
          display,
          `cannot write: ${osReason(e)}`,
          undefined,
          { cause: e },
        );
      } finally {
        backlog -= bytes.byteLength;
      }
    });
    if (backlog > MAX_WRITE_BACKLOG) await out.idle();
    if (writeError) throw writeError;
  };
  const append = async (spec: TensorSpec, bytes: Uint8Array): Promise<void> => {
    const c = cursor.get(spec.name)!;
    if (c.at + bytes.byteLength > c.end) {
      throw new Error(
        `internal: tensor "${spec.name}" got more bytes than its size`,
      );
    }
    await write(c.at, bytes);
    c.at += bytes.byteLength;
  };

  const steps = stepsOf(units);
  const reads: (Promise<Uint8Array> | undefined)[] = new Array(steps.length);
  const startRead = (i: number): void => {
    const s = steps[i];
    if (!s || reads[i] || s.unit.kind === "produce" || !("length" in s)) return;
    const { path: src, info } = s.unit.src;
    const offset = info.byteOffset +
      (s.unit.kind === "copy" ? (s as { pos: number }).pos : 0) +
      (s.unit.kind === "quantize"
        ? (s as { rowStart: number }).rowStart * s.unit.inFeatures *
          DTYPE_SIZE[s.unit.dtype]
        : 0);
    const p = info.readRange
      ? info.readRange(offset - info.byteOffset, s.length)
      : readers.read(src, offset, s.length, info.name);
    p.catch(() => {});
    reads[i] = p;
  };

  try {
    await write(0, header);
    for (let i = 0; i < steps.length; i++) {
      for (let k = 0; k <= LOOKAHEAD; k++) startRead(i + k);
      const step = steps[i]!;
      const u = step.unit;
      const last = i + 1 === steps.length || steps[i + 1]!.unit !== u;
      if (u.kind === "produce") {
        const parts = await u.produce();
        u.specs.forEach((s, k) => {
          const b = parts[k];
          if (!b || b.byteLength !== specBytes(s)) {
            throw new Error(
              `internal: tensor "${s.name}" produced ${
                b?.byteLength ?? 0
              } bytes, needs ${specBytes(s)}`,
            );
          }
        });
        for (let k = 0; k < parts.length; k++) {
          await append(u.specs[k]!, parts[k]!);
        }
      } else {
        const bytes = await reads[i]!;
        reads[i] = undefined;
        if (u.kind === "copy") {
          await append(u.spec, bytes);
        } else {
          const st = step as { rowStart: number; rows: number };
          let data = floatView(bytes, u.dtype);
          if (u.transposed) data = transpose(data, u.inFeatures, u.outFeatures);
          const parts = quantizeBlock(
            data,
            u,
            st.rowStart,
            st.rows,
            format,
          );
          for (let k = 0; k < parts.length; k++) {
            await append(u.specs[k]!, parts[k]!);
          }
        }
        hooks.onBytes?.(bytes.byteLength);
      }
      if (last) hooks.onUnit?.(u);
    }
    await out.idle();
    if (writeError) throw writeError;
    for (const [name, c] of cursor) {
      if (c.at !== c.end) {
        throw new Error(
          `internal: tensor "${name}" is ${c.end - c.at} bytes short`,
        );
      }
    }
  } finally {
    await out.idle();
    for (const r of reads) await r?.catch(() => {});
    handle.close();
  }
}
