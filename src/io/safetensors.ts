/**
 * Reading and writing safetensors files one tensor at a time.
 *
 * {@linkcode SafetensorsFile.open} reads and validates only the header, with
 * the rules of the reference implementation (huggingface/safetensors): length
 * prefix within the file and at most 100,000,000; UTF-8 JSON object (JSON
 * whitespace allowed around it); known dtypes; shapes and offsets plain
 * non-negative integers (`2.0`, `1e2`, `-0` are refused, as serde refuses
 * them) below 2^53; offsets contiguous from 0 with `end − begin = numel ×
 * itemsize`; no bytes after the last tensor; `__metadata__` a string map or
 * null. On top of it: a name given twice is refused (`JSON.parse` would keep
 * the last silently), and so is a key given twice inside an entry or
 * `__metadata__`. Each tensor is then one positioned read into a buffer of its
 * own. {@linkcode writeSafetensors} streams a file out header first, one
 * tensor's bytes in memory at a time. Every failure is a
 * {@linkcode SafetensorsError} whose one-line message names the file, the
 * tensor and the problem.
 *
 * Dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U64 U32 U16 U8 BOOL F8_E4M3 F8_E5M2.
 * The format's other dtypes (F4, F6_E2M3, F6_E3M2, C64) are refused with
 * `InvalidDtype`.
 *
 * @module
 */

import type { DType } from "../dtype.ts";
import { DTYPE_ARRAY, DTYPE_SIZE } from "../dtype.ts";
import { type LazyTensor, numel, Tensor } from "../tensor.ts";
import { DTYPE_BY_FILE_NAME, FILE_DTYPE_NAME } from "./safetensors_dtype.ts";
import { SafetensorsError } from "./_safetensors_error.ts";
import {
  MAX_HEADER_SIZE,
  parseHeader,
  readHeaderLength,
} from "./_safetensors_header.ts";

export {
  SafetensorsError,
  type SafetensorsErrorKind,
} from "./_safetensors_error.ts";
// The types this API speaks in, so the module documents on its own.
export type { DType, FloatDType, TypedArray } from "../dtype.ts";
export type { LazyTensor, Tensor } from "../tensor.ts";

/** Where one tensor lies in a safetensors file, and what it holds. */
export interface TensorInfo {
  /** The tensor's name in the header. */
  readonly name: string;
  /** Its element type. */
  readonly dtype: DType;
  /** The dtype as the file spells it (`"BF16"`). */
  readonly safetensorsDtype: string;
  /** Its dimensions, outermost first (`[]` for a scalar). */
  readonly shape: readonly number[];
  /** Absolute offset of its first byte in the file. */
  readonly byteOffset: number;
  /** Size of its data in bytes. */
  readonly byteLength: number;
  /**
   * Set only where the bytes are not one run at `byteOffset` (a
   * non-contiguous view in a PyTorch `.bin`): reads bytes `[start, start +
   * length)` of the tensor as if it were contiguous.
   */
  readonly readRange?: (start: number, length: number) => Promise<Uint8Array>;
}

/**
 * An open safetensors file whose header has been validated. Tensors are read
 * on demand, each with a single positioned read; reads through one instance
 * are queued, so concurrent calls are safe.
 *
 * @example Write a file, then read one tensor back
 * ```ts
 * import { SafetensorsFile, writeSafetensors } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * const path = `${dir}/tiny.safetensors`;
 * const w = new Float32Array([1, 2, 3, 4]);
 * await writeSafetensors(path, [
 *   { name: "w", dtype: "f32", shape: [2, 2], byteLength: 16, bytes: () => new Uint8Array(w.buffer) },
 * ]);
 * using file = await SafetensorsFile.open(path);
 * assert.deepEqual(file.tensors.map((t) => t.name), ["w"]);
 * const t = await file.read("w");
 * assert.deepEqual([...t.data], [1, 2, 3, 4]);
 * assert.equal(file.metadata?.format, "pt");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class SafetensorsFile {
  /** The path the file was opened with (used in error messages). */
  readonly path: string;
  /** The `__metadata__` map, or `null` when the file has none. */
  readonly metadata: Readonly<Record<string, string>> | null;
  /** Every tensor, in data-offset order. */
  readonly tensors: readonly TensorInfo[];
  /** Bytes before the tensor data: the 8-byte length plus the header. */
  readonly headerSize: number;

  #file: Deno.FsFile | null;
  #byName: Map<string, TensorInfo>;
  // seek + read on one handle must not interleave.
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(
    path: string,
    file: Deno.FsFile,
    headerSize: number,
    metadata: Record<string, string> | null,
    tensors: TensorInfo[],
  ) {
    this.path = path;
    this.#file = file;
    this.headerSize = headerSize;
    this.metadata = metadata === null ? null : Object.freeze(metadata);
    this.tensors = Object.freeze(tensors);
    this.#byName = new Map(tensors.map((t) => [t.name, t]));
  }

  /**
   * Opens `path` and validates its header; reads nothing else. Throws
   * {@linkcode SafetensorsError} for a missing, unreadable or malformed file.
   *
   * @example
   * ```ts
   * import { SafetensorsError, SafetensorsFile } from "@tinyq/tinyq";
   * import assert from "node:assert/strict";
   * const dir = await Deno.makeTempDir();
   * await Deno.writeFile(`${dir}/bad.safetensors`, new Uint8Array(4));
   * await assert.rejects(
   *   SafetensorsFile.open(`${dir}/bad.safetensors`),
   *   (e) => e instanceof SafetensorsError && e.kind === "HeaderTooSmall",
   * );
   * await Deno.remove(dir, { recursive: true });
   * ```
   */
  static async open(path: string): Promise<SafetensorsFile> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      throw ioError(path, "cannot open", e);
    }
    try {
      const stat = await file.stat().catch((e) => {
        throw ioError(path, "cannot read", e);
      });
      if (!stat.isFile) {
        throw new SafetensorsError("Io", path, "is not a regular file");
      }
      const size = stat.size;
      const prefix = new Uint8Array(8);
      if (size >= 8) await readAt(file, path, prefix, 0);
      const n = readHeaderLength(path, prefix, size);
      const headerBytes = new Uint8Array(n);
      await readAt(file, path, headerBytes, 8);
      const { metadata, entries } = parseHeader(path, headerBytes, size);
      const tensors = entries.map((e): TensorInfo =>
        Object.freeze({
          name: e.name,
          dtype: e.dtype,
          safetensorsDtype: e.fileDtype,
          shape: Object.freeze(e.shape),
          byteOffset: 8 + n + e.begin,
          byteLength: e.end - e.begin,
        })
      );
      return new SafetensorsFile(path, file, 8 + n, metadata, tensors);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /**
   * Returns the entry of tensor `name`, or `undefined`.
   *
   * @example
   * ```ts
   * import { SafetensorsFile, writeSafetensors } from "@tinyq/tinyq";
   * import assert from "node:assert/strict";
   * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
   * await writeSafetensors(path, [
   *   { name: "b", dtype: "bf16", shape: [3], byteLength: 6, bytes: () => new Uint8Array(6) },
   * ]);
   * using file = await SafetensorsFile.open(path);
   * assert.equal(file.get("b")?.safetensorsDtype, "BF16");
   * assert.equal(file.get("c"), undefined);
   * await Deno.remove(path);
   * ```
   */
  get(name: string): TensorInfo | undefined {
    return this.#byName.get(name);
  }

  /**
   * Reads exactly the bytes of tensor `name` into a fresh, 8-byte-aligned
   * buffer of that length (so any typed array can view it without a copy).
   *
   * @example
   * ```ts
   * import { SafetensorsFile, writeSafetensors } from "@tinyq/tinyq";
   * import assert from "node:assert/strict";
   * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
   * await writeSafetensors(path, [
   *   { name: "q", dtype: "i8", shape: [2], byteLength: 2, bytes: () => new Uint8Array([255, 1]) },
   * ]);
   * using file = await SafetensorsFile.open(path);
   * assert.deepEqual([...await file.readBytes("q")], [255, 1]);
   * await Deno.remove(path);
   * ```
   */
  async readBytes(name: string): Promise<Uint8Array> {
    const info = this.#info(name);
    return await this.readInto(
      name,
      new Uint8Array(new ArrayBuffer(info.byteLength)),
    );
  }

  /**
   * Reads the bytes of tensor `name` into the start of `target` and returns
   * that part of it. For copying tensors through: a reused buffer skips the
   * page faults of a fresh one, which cost more than the read itself.
   * Throws `RangeError` when `target` is shorter than the tensor.
   *
   * @example Copy every tensor through one scratch buffer
   * ```ts
   * import { SafetensorsFile, writeSafetensors } from "@tinyq/tinyq";
   * import assert from "node:assert/strict";
   * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
   * await writeSafetensors(path, [
   *   { name: "a", dtype: "u8", shape: [2], byteLength: 2, bytes: () => new Uint8Array([1, 2]) },
   *   { name: "b", dtype: "u8", shape: [1], byteLength: 1, bytes: () => new Uint8Array([3]) },
   * ]);
   * using file = await SafetensorsFile.open(path);
   * const scratch = new Uint8Array(Math.max(...file.tensors.map((t) => t.byteLength)));
   * assert.deepEqual([...await file.readInto("a", scratch)], [1, 2]);
   * assert.deepEqual([...await file.readInto("b", scratch)], [3]);
   * await Deno.remove(path);
   * ```
   */
  async readInto(name: string, target: Uint8Array): Promise<Uint8Array> {
    const info = this.#info(name);
    if (target.byteLength < info.byteLength) {
      throw new RangeError(
        `readInto(${
          JSON.stringify(name)
        }): target holds ${target.byteLength} ` +
          `bytes, the tensor ${info.byteLength}`,
      );
    }
    const out = target.subarray(0, info.byteLength);
    return await this.#exclusive(async () => {
      const file = this.#open();
      if (out.byteLength > 0) {
        await readAt(file, this.path, out, info.byteOffset, name);
      }
      return out;
    });
  }

  /**
   * Reads tensor `name` as a {@linkcode Tensor} of its dtype: bf16 as raw
   * `Uint16Array` bits, bool and the f8 types as `Uint8Array`.
   *
   * @example
   * ```ts
   * import { SafetensorsFile, writeSafetensors } from "@tinyq/tinyq";
   * import assert from "node:assert/strict";
   * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
   * const h = new Float16Array([0.5, -2]);
   * await writeSafetensors(path, [
   *   { name: "h", dtype: "f16", shape: [1, 2], byteLength: 4, bytes: () => new Uint8Array(h.buffer) },
   * ]);
   * using file = await SafetensorsFile.open(path);
   * const t = await file.read("h");
   * assert.equal(t.dtype, "f16");
   * assert.deepEqual(t.shape, [1, 2]);
   * assert.deepEqual([...t.data], [0.5, -2]);
   * await Deno.remove(path);
   * ```
   */
  async read(name: string): Promise<Tensor> {
    const info = this.#info(name);
    const bytes = await this.readBytes(name);
    const View = DTYPE_ARRAY[info.dtype];
    const data = new View(
      bytes.buffer as ArrayBuffer,
      0,
      info.byteLength / DTYPE_SIZE[info.dtype],
    );
    return new Tensor(data, info.shape, info.dtype);
  }

  /**
   * A tensor backed by this file: dtype and shape now, the data on `load()`
   * (through {@linkcode SafetensorsFile.read}, so only while the file is open).
   *
   * @example
   * ```ts
   * import { SafetensorsFile, writeSafetensors } from "@tinyq/tinyq";
   * import assert from "node:assert/strict";
   * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
   * await writeSafetensors(path, [
   *   { name: "s", dtype: "u8", shape: [], byteLength: 1, bytes: () => new Uint8Array([7]) },
   * ]);
   * using file = await SafetensorsFile.open(path);
   * const lazy = file.lazy("s");
   * assert.deepEqual(lazy.shape, []);
   * assert.deepEqual([...(await lazy.load()).data], [7]);
   * await Deno.remove(path);
   * ```
   */
  lazy(name: string): LazyTensor {
    const info = this.#info(name);
    return {
      dtype: info.dtype,
      shape: info.shape,
      load: () => this.read(name),
    };
  }

  /**
   * Closes the file; later reads fail with kind `Io`. Calling it twice is
   * harmless, and `using` calls it at the end of the scope.
   *
   * @example
   * ```ts
   * import { SafetensorsFile, writeSafetensors } from "@tinyq/tinyq";
   * import assert from "node:assert/strict";
   * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
   * await writeSafetensors(path, []);
   * const file = await SafetensorsFile.open(path);
   * file.close();
   * file.close();
   * assert.equal(file.tensors.length, 0);
   * await Deno.remove(path);
   * ```
   */
  close(): void {
    this.#file?.close();
    this.#file = null;
  }

  /** Closes the file (for `using`). */
  [Symbol.dispose](): void {
    this.close();
  }

  #info(name: string): TensorInfo {
    const info = this.#byName.get(name);
    if (info === undefined) {
      throw new SafetensorsError(
        "TensorNotFound",
        this.path,
        `no tensor named ${JSON.stringify(name)}`,
      );
    }
    return info;
  }

  #open(): Deno.FsFile {
    if (this.#file === null) {
      throw new SafetensorsError("Io", this.path, "file is closed");
    }
    return this.#file;
  }

  #exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task);
    this.#queue = run.catch(() => {});
    return run;
  }
}

/**
 * One tensor for {@linkcode writeSafetensors}: its description now, its bytes
 * (little-endian, row-major) when the writer reaches it.
 */
export interface TensorEntry {
  /** The tensor's name in the header. */
  name: string;
  /** Its element type. */
  dtype: DType;
  /** Its dimensions, outermost first. */
  shape: readonly number[];
  /** Size of its data in bytes; must be numel × the dtype's size. */
  byteLength: number;
  /** Produces the data; called once, when the writer gets to this tensor. */
  bytes: () => Uint8Array | Promise<Uint8Array>;
}

/**
 * Writes a safetensors file at `path` (created or truncated), streaming:
 * the header first, then each entry's bytes in the order given, produced one
 * at a time, so only one tensor's bytes need be in memory. The header is
 * padded with spaces to a multiple of 8 bytes and its `__metadata__` holds
 * `format: "pt"` plus `metadata` (whose own `format`, if any, wins).
 *
 * The file is written in place; callers wanting all-or-nothing output write
 * to a temporary name and rename. Data stays aligned for memory-mapping
 * readers when entries come in descending dtype size (the reference writer's
 * order), as every offset is then a multiple of the next element size.
 *
 * Throws {@linkcode SafetensorsError}: invalid names, shapes, sizes or
 * metadata before anything is written; a produced chunk of the wrong length;
 * or `Io` for a failed write (a partial file may remain). An error thrown by
 * an entry's `bytes()` propagates unchanged.
 *
 * @example Write a bf16 matrix and an i8 vector
 * ```ts
 * import { SafetensorsFile, writeSafetensors } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await writeSafetensors(path, [
 *   { name: "w", dtype: "bf16", shape: [2, 2], byteLength: 8, bytes: () => new Uint8Array(8) },
 *   { name: "q", dtype: "i8", shape: [3], byteLength: 3, bytes: async () => new Uint8Array(3) },
 * ], { source: "example" });
 * using file = await SafetensorsFile.open(path);
 * assert.deepEqual(file.metadata, { format: "pt", source: "example" });
 * assert.equal(file.headerSize % 8, 0);
 * await Deno.remove(path);
 * ```
 */
export async function writeSafetensors(
  path: string,
  entries: readonly TensorEntry[],
  metadata?: Record<string, string>,
): Promise<void> {
  const header = encodeHeader(path, entries, metadata);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { write: true, create: true, truncate: true });
  } catch (e) {
    throw ioError(path, "cannot create", e);
  }
  try {
    await writeAll(file, path, header);
    for (const entry of entries) {
      const bytes = await entry.bytes();
      if (
        !(bytes instanceof Uint8Array) || bytes.byteLength !== entry.byteLength
      ) {
        const got = bytes instanceof Uint8Array
          ? `${bytes.byteLength} bytes`
          : `a ${Object.prototype.toString.call(bytes).slice(8, -1)}`;
        throw new SafetensorsError(
          "TensorInvalidInfo",
          path,
          `bytes() produced ${got}, but the header declares ${entry.byteLength}`,
          entry.name,
        );
      }
      await writeAll(file, path, bytes);
    }
  } finally {
    file.close();
  }
}

/**
 * Builds the 8-byte length and the space-padded header for `entries`, after
 * checking each the way the reader would.
 */
function encodeHeader(
  path: string,
  entries: readonly TensorEntry[],
  metadata: Record<string, string> | undefined,
): Uint8Array {
  const meta: Record<string, string> = { format: "pt" };
  for (const [k, v] of Object.entries(metadata ?? {})) {
    if (typeof v !== "string") {
      throw new SafetensorsError(
        "InvalidMetadata",
        path,
        `__metadata__ value of ${
          JSON.stringify(k)
        } must be a string, got ${typeof v}`,
      );
    }
    Object.defineProperty(meta, k, {
      value: v,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  // Built by hand, not JSON.stringify of one object: objects list
  // integer-like keys ("0", "1") first, which would reorder the tensors.
  const parts = [`{"__metadata__":${JSON.stringify(meta)}`];
  const seen = new Set<string>();
  let offset = 0;
  for (const e of entries) {
    const fail = (kind: SafetensorsError["kind"], detail: string): never => {
      throw new SafetensorsError(kind, path, detail, e.name);
    };
    if (e.name === "__metadata__") {
      fail("TensorInvalidInfo", "the name __metadata__ is reserved");
    }
    if (seen.has(e.name)) fail("DuplicateTensor", "name given twice");
    seen.add(e.name);
    const fileDtype = FILE_DTYPE_NAME[e.dtype];
    if (fileDtype === undefined || !Object.hasOwn(FILE_DTYPE_NAME, e.dtype)) {
      fail("InvalidDtype", `unknown dtype ${JSON.stringify(e.dtype)}`);
    }
    for (const d of e.shape) {
      if (!Number.isSafeInteger(d) || d < 0) {
        fail(
          "InvalidShape",
          `shape [${e.shape.join(", ")}] has the invalid dimension ${d}`,
        );
      }
    }
    const need = numel(e.shape) * DTYPE_SIZE[e.dtype];
    if (!Number.isSafeInteger(need)) {
      fail(
        "ValidationOverflow",
        `shape [${e.shape.join(", ")}] is more than 2^53 - 1 bytes`,
      );
    }
    if (e.byteLength !== need) {
      fail(
        "TensorInvalidInfo",
        `byteLength ${e.byteLength} but dtype ${fileDtype} × shape ` +
          `[${e.shape.join(", ")}] needs ${need}`,
      );
    }
    const info = {
      dtype: fileDtype,
      shape: e.shape,
      data_offsets: [offset, offset + need],
    };
    parts.push(`,${JSON.stringify(e.name)}:${JSON.stringify(info)}`);
    offset += need;
  }
  parts.push("}");
  const json = new TextEncoder().encode(parts.join(""));
  const n = Math.ceil(json.byteLength / 8) * 8;
  if (n > MAX_HEADER_SIZE) {
    throw new SafetensorsError(
      "HeaderTooLarge",
      path,
      `header of ${n} bytes is over the limit of ${MAX_HEADER_SIZE} bytes`,
    );
  }
  const out = new Uint8Array(8 + n).fill(0x20, 8 + json.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(n), true);
  out.set(json, 8);
  return out;
}

/**
 * Returns the name the safetensors format uses for `dtype` (`"BF16"`).
 *
 * @example
 * ```ts
 * import { safetensorsDtypeName } from "./safetensors.ts";
 * import assert from "node:assert/strict";
 * assert.equal(safetensorsDtypeName("f8_e4m3"), "F8_E4M3");
 * ```
 */
export function safetensorsDtypeName(dtype: DType): string {
  const name = Object.hasOwn(FILE_DTYPE_NAME, dtype)
    ? FILE_DTYPE_NAME[dtype]
    : undefined;
  if (name === undefined) {
    throw new TypeError(`Unknown dtype ${JSON.stringify(dtype)}`);
  }
  return name;
}

/**
 * Returns the TinyQ dtype for a safetensors dtype name, or `undefined` for a
 * name TinyQ does not read (unknown, or F4/F6/C64).
 *
 * @example
 * ```ts
 * import { parseSafetensorsDtype } from "./safetensors.ts";
 * import assert from "node:assert/strict";
 * assert.equal(parseSafetensorsDtype("BF16"), "bf16");
 * assert.equal(parseSafetensorsDtype("bf16"), undefined);
 * ```
 */
export function parseSafetensorsDtype(name: string): DType | undefined {
  return DTYPE_BY_FILE_NAME.get(name);
}

/** Reads `buf.byteLength` bytes at `position`, or fails naming the file. */
async function readAt(
  file: Deno.FsFile,
  path: string,
  buf: Uint8Array,
  position: number,
  tensor?: string,
): Promise<void> {
  try {
    await file.seek(position, Deno.SeekMode.Start);
    let done = 0;
    while (done < buf.byteLength) {
      const n = await file.read(buf.subarray(done));
      if (n === null) {
        throw new SafetensorsError(
          "Io",
          path,
          `file ended at byte ${position + done}, before the ` +
            `${buf.byteLength} bytes at ${position} (changed since it was opened?)`,
          tensor,
        );
      }
      done += n;
    }
  } catch (e) {
    if (e instanceof SafetensorsError) throw e;
    throw ioError(path, "cannot read", e, tensor);
  }
}

/** Writes all of `bytes` (a single `write` may take only part). */
async function writeAll(
  file: Deno.FsFile,
  path: string,
  bytes: Uint8Array,
): Promise<void> {
  try {
    let done = 0;
    while (done < bytes.byteLength) {
      done += await file.write(bytes.subarray(done));
    }
  } catch (e) {
    throw ioError(path, "cannot write", e);
  }
}

function ioError(
  path: string,
  action: string,
  cause: unknown,
  tensor?: string,
): SafetensorsError {
  // Deno appends the operation and path ("…: open 'x'"); the path leads already.
  const why = (cause instanceof Error ? cause.message : String(cause))
    .replace(/: \w+ '.*'$/s, "");
  return new SafetensorsError("Io", path, `${action}: ${why}`, tensor, {
    cause,
  });
}
