/**
 * {@linkcode PytorchFile}: a `pytorch_model.bin` (the zip format of
 * `torch.save`) read as a state dict, one tensor at a time, behind the same
 * interface as `SafetensorsFile`, so every command reads it unchanged.
 *
 * Only `<archive>/data.pkl` is read up front (and unpickled by the
 * restricted unpickler, which runs nothing); each tensor's bytes are read
 * from its storage's zip entry when asked for. A tensor that is a
 * contiguous run of its storage (any storage offset) is a plain positioned
 * read; a non-contiguous view (a transpose, a strided slice, an expanded
 * dimension) is gathered into a contiguous copy, reading just the span of
 * the storage it touches. Tensors sharing a storage (tied weights, stored
 * once by `torch.save`) are each read from it. Tensors are listed in the
 * order the safetensors writer would store them (element type, then name),
 * so a `.bin` reads exactly as its safetensors conversion does.
 *
 * @module
 */

import { type DType, DTYPE_ARRAY, DTYPE_SIZE } from "../../dtype.ts";
import { type LazyTensor, numel, Tensor } from "../../tensor.ts";
import { CheckpointError, osReason } from "../checkpoint_error.ts";
import { FILE_DTYPE_NAME } from "../safetensors_dtype.ts";
import type { TensorInfo } from "../safetensors.ts";
import { describe, type TensorRef, unpickle } from "./unpickle.ts";
import { crc32, readExactly, ZipArchive, type ZipEntry } from "./zip.ts";

/** The largest `data.pkl` read (a state dict of 100k tensors needs ~20 MB). */
const MAX_PICKLE = 512 * 2 ** 20;

// The legacy (pre-1.6) format starts with a pickled magic number.
const LEGACY_MAGIC = [0x80, 0x02, 0x8a, 0x0a];

// The safetensors writer's order: dtypes by this rank, highest first, then by name.
const DTYPE_RANK: readonly DType[] = [
  "bool",
  "u8",
  "i8",
  "f8_e5m2",
  "f8_e4m3",
  "f8_e8m0",
  "f8_e4m3fnuz",
  "f8_e5m2fnuz",
  "i16",
  "u16",
  "f16",
  "bf16",
  "i32",
  "u32",
  "f32",
  "f64",
  "i64",
  "u64",
];

/** A tensor of a `.bin`: where its storage lies, and its view of it. */
interface BinTensor {
  readonly info: TensorInfo;
  /** Absolute offset of the storage's first byte. */
  readonly storageStart: number;
  readonly ref: TensorRef;
  readonly contiguous: boolean;
}

function isContiguous(
  shape: readonly number[],
  stride: readonly number[],
): boolean {
  let expect = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d]! !== 1 && stride[d]! !== expect) return false;
    expect *= shape[d]!;
  }
  return true;
}

/**
 * An open `torch.save` checkpoint (zip format), read like a safetensors
 * file: `tensors` and `get` describe every tensor, `read`/`readBytes` load
 * one as contiguous little-endian bytes. Throws {@linkcode CheckpointError}
 * for a legacy-format file, a pickle that asks for anything but a state
 * dict, or a malformed archive.
 *
 * @example Read a tensor of a committed torch.save file
 * ```ts
 * import { PytorchFile } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * using f = await PytorchFile.open("tests/fixtures/pytorch/dtypes.bin");
 * const t = await f.read("view.offset");
 * assert.deepEqual(t.shape, [2, 3]);
 * assert.deepEqual([...t.data], [8, 9, 10, 14, 15, 16]);
 * ```
 */
export class PytorchFile {
  /** The path it was opened with. */
  readonly path: string;
  /** A `.bin` has no `__metadata__`: always null. */
  readonly metadata: Readonly<Record<string, string>> | null = null;
  /** Every tensor, in the safetensors writer's order. */
  readonly tensors: readonly TensorInfo[];
  #file: Deno.FsFile | null;
  #byName: Map<string, BinTensor>;
  #queue: Promise<unknown> = Promise.resolve();
  #gathered: { name: string; bytes: Uint8Array } | null = null;

  private constructor(path: string, file: Deno.FsFile, tensors: BinTensor[]) {
    this.path = path;
    this.#file = file;
    const bound = tensors.map((t): BinTensor =>
      t.contiguous ? t : {
        ...t,
        info: Object.freeze({
          ...t.info,
          readRange: (start: number, length: number) =>
            this.readRange(t.info.name, start, length),
        }),
      }
    );
    this.tensors = Object.freeze(bound.map((t) => t.info));
    this.#byName = new Map(bound.map((t) => [t.info.name, t]));
  }

  /** Opens `path`, reads its zip directory and unpickles its state dict. */
  static async open(path: string): Promise<PytorchFile> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      throw new CheckpointError(path, `cannot open: ${osReason(e)}`);
    }
    try {
      const stat = await file.stat();
      if (!stat.isFile) {
        throw new CheckpointError(path, "is not a regular file");
      }
      const head = await readExactly(file, path, 0, Math.min(4, stat.size));
      if (LEGACY_MAGIC.every((b, i) => head[i] === b)) {
        throw new CheckpointError(
          path,
          "is in PyTorch's legacy (pre-1.6, non-zip) format, which TinyQ does not read; " +
            "re-save it with torch.save(torch.load(path), path) in PyTorch ≥ 1.6, or convert it to safetensors",
        );
      }
      if (!(head[0] === 0x50 && head[1] === 0x4b)) {
        throw new CheckpointError(
          path,
          "is not a torch.save zip file (no zip signature)",
        );
      }
      const zip = await ZipArchive.open(file, path, stat.size);
      const tensors = await readStateDict(file, zip, path);
      return new PytorchFile(path, file, tensors);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** The entry of tensor `name`, or undefined. */
  get(name: string): TensorInfo | undefined {
    return this.#byName.get(name)?.info;
  }

  /** Reads tensor `name` as contiguous bytes into a fresh buffer. */
  async readBytes(name: string): Promise<Uint8Array> {
    const t = this.#tensor(name);
    return await this.readRange(name, 0, t.info.byteLength);
  }

  /**
   * Bytes `[start, start + length)` of tensor `name` laid out contiguously
   * (row-major). A contiguous tensor is one positioned read; a view gathers
   * its elements from the span of the storage it covers.
   */
  async readRange(
    name: string,
    start: number,
    length: number,
  ): Promise<Uint8Array> {
    const t = this.#tensor(name);
    if (start < 0 || length < 0 || start + length > t.info.byteLength) {
      throw new RangeError(`readRange(${JSON.stringify(name)}): out of bounds`);
    }
    return await this.#exclusive(async () => {
      const file = this.#open();
      if (length === 0) return new Uint8Array(0);
      if (t.contiguous) {
        return await readExactly(
          file,
          this.path,
          t.info.byteOffset + start,
          length,
          name,
        );
      }
      return await this.#gather(file, t, start, length);
    });
  }

  /** Reads tensor `name` into the start of `target` and returns that part. */
  async readInto(name: string, target: Uint8Array): Promise<Uint8Array> {
    const bytes = await this.readBytes(name);
    if (target.byteLength < bytes.byteLength) {
      throw new RangeError(
        `readInto(${
          JSON.stringify(name)
        }): target holds ${target.byteLength} bytes, the tensor ${bytes.byteLength}`,
      );
    }
    target.set(bytes);
    return target.subarray(0, bytes.byteLength);
  }

  /** Reads tensor `name` as a {@linkcode Tensor} (bf16 as raw bits). */
  async read(name: string): Promise<Tensor> {
    const info = this.#tensor(name).info;
    const bytes = await this.readBytes(name);
    const View = DTYPE_ARRAY[info.dtype];
    return new Tensor(
      new View(
        bytes.buffer as ArrayBuffer,
        0,
        info.byteLength / DTYPE_SIZE[info.dtype],
      ),
      info.shape,
      info.dtype,
    );
  }

  /** A tensor read on `load()`. */
  lazy(name: string): LazyTensor {
    const info = this.#tensor(name).info;
    return {
      dtype: info.dtype,
      shape: info.shape,
      load: () => this.read(name),
    };
  }

  /** Closes the file; calling it twice is harmless. */
  close(): void {
    this.#file?.close();
    this.#file = null;
    this.#gathered = null;
  }

  /** Closes the file (for `using`). */
  [Symbol.dispose](): void {
    this.close();
  }

  async #gather(
    file: Deno.FsFile,
    t: BinTensor,
    start: number,
    length: number,
  ): Promise<Uint8Array> {
    // The writer asks for a view block by block; gathering it once keeps the
    // reads to one pass over its storage span (memory: this one tensor).
    if (this.#gathered?.name !== t.info.name) {
      this.#gathered = null;
      this.#gathered = {
        name: t.info.name,
        bytes: await this.#materialize(file, t),
      };
    }
    return this.#gathered.bytes.slice(start, start + length);
  }

  async #materialize(file: Deno.FsFile, t: BinTensor): Promise<Uint8Array> {
    const size = DTYPE_SIZE[t.info.dtype];
    const { shape, stride, offset } = t.ref;
    const out = new Uint8Array(new ArrayBuffer(t.info.byteLength));
    if (out.byteLength === 0) return out;
    // Strides are non-negative: the span runs from the first element to the last.
    let last = offset;
    for (let d = 0; d < shape.length; d++) last += (shape[d]! - 1) * stride[d]!;
    const span = await readExactly(
      file,
      this.path,
      t.storageStart + offset * size,
      (last - offset + 1) * size,
      t.info.name,
    );
    // Walk the view in row-major order with an odometer over the indices,
    // copying whole elements through views of the element's width.
    const Elem = size === 1
      ? Uint8Array
      : size === 2
      ? Uint16Array
      : size === 4
      ? Uint32Array
      : BigUint64Array;
    const src = new Elem(span.buffer as ArrayBuffer, 0, span.byteLength / size);
    const dst = new Elem(out.buffer, 0, out.byteLength / size);
    const rank = shape.length;
    const index = new Array<number>(rank).fill(0);
    const inner = rank === 0 ? 1 : shape[rank - 1]!;
    const innerStride = rank === 0 ? 0 : stride[rank - 1]!;
    let base = 0; // element offset of the current row, relative to `offset`
    for (let o = 0; o < dst.length;) {
      let e = base;
      for (let k = 0; k < inner; k++, e += innerStride) {
        (dst as Uint32Array)[o++] = (src as Uint32Array)[e]!;
      }
      for (let d = rank - 2; d >= 0; d--) {
        index[d]!++;
        base += stride[d]!;
        if (index[d]! < shape[d]!) break;
        base -= index[d]! * stride[d]!;
        index[d] = 0;
      }
    }
    return out;
  }

  #tensor(name: string): BinTensor {
    const t = this.#byName.get(name);
    if (!t) throw new CheckpointError(this.path, "no such tensor", name);
    return t;
  }

  #open(): Deno.FsFile {
    if (this.#file === null) {
      throw new CheckpointError(this.path, "file is closed");
    }
    return this.#file;
  }

  #exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task);
    this.#queue = run.catch(() => {});
    return run;
  }
}

/** The one top-level folder every entry lives in (`archive/`, or the file's stem). */
function archivePrefix(zip: ZipArchive, path: string): string {
  const pkl = zip.entries.filter((e) =>
    e.name.endsWith("/data.pkl") || e.name === "data.pkl"
  );
  if (pkl.length !== 1) {
    throw new CheckpointError(
      path,
      pkl.length === 0
        ? "is a zip file without a data.pkl; not a torch.save checkpoint"
        : "has several data.pkl entries; not a torch.save checkpoint",
    );
  }
  return pkl[0]!.name.slice(0, -"data.pkl".length);
}

async function readStateDict(
  file: Deno.FsFile,
  zip: ZipArchive,
  path: string,
): Promise<BinTensor[]> {
  const prefix = archivePrefix(zip, path);
  const order = zip.get(`${prefix}byteorder`);
  if (order) {
    const b = await readExactly(
      file,
      path,
      await zip.dataOffset(file, order),
      Math.min(order.size, 16),
    );
    const s = new TextDecoder().decode(b);
    if (s !== "little") {
      throw new CheckpointError(
        path,
        `was saved on a ${s}-endian machine; only little-endian is read`,
      );
    }
  }
  const pklEntry = zip.get(`${prefix}data.pkl`)!;
  if (pklEntry.size > MAX_PICKLE) {
    throw new CheckpointError(
      path,
      `data.pkl is ${pklEntry.size} bytes, over the limit of ${MAX_PICKLE}; refused`,
    );
  }
  const pkl = await readExactly(
    file,
    path,
    await zip.dataOffset(file, pklEntry),
    pklEntry.size,
  );
  if (crc32(pkl) !== pklEntry.crc32) {
    throw new CheckpointError(
      path,
      "data.pkl fails its CRC check; the file is damaged",
    );
  }
  const root = unpickle(pkl, path);
  if (
    typeof root !== "object" || root === null || root instanceof Uint8Array ||
    root.kind !== "dict"
  ) {
    throw new CheckpointError(
      path,
      `holds ${
        describe(root)
      }, not a state dict (a dict of tensor names to tensors)`,
    );
  }
  const storages = new Map<string, { entry: ZipEntry; start: number }>();
  const out: BinTensor[] = [];
  for (const [key, value] of root.map) {
    if (typeof key !== "string") {
      throw new CheckpointError(
        path,
        `has the key ${String(key)}; a state dict's keys are tensor names`,
      );
    }
    if (
      typeof value !== "object" || value === null ||
      value instanceof Uint8Array || value.kind !== "tensor"
    ) {
      throw new CheckpointError(
        path,
        `holds ${
          describe(value)
        }, not a tensor; not a plain state dict (a training checkpoint? save model.state_dict())`,
        key,
      );
    }
    const { storage, dtype, shape, stride, offset } = value;
    if (!Object.hasOwn(FILE_DTYPE_NAME, dtype)) {
      throw new CheckpointError(
        path,
        `dtype ${dtype} cannot be stored in safetensors`,
        key,
      );
    }
    let s = storages.get(storage.key);
    if (!s) {
      const entry = zip.get(`${prefix}data/${storage.key}`);
      if (!entry) {
        throw new CheckpointError(
          path,
          `its storage ${
            JSON.stringify(storage.key)
          } is missing from the archive`,
          key,
        );
      }
      s = { entry, start: await zip.dataOffset(file, entry) };
      storages.set(storage.key, s);
    }
    const itemsize = DTYPE_SIZE[dtype];
    const storageBytes = storage.dtype === null
      ? storage.numel
      : storage.numel * itemsize;
    if (storageBytes > s.entry.size) {
      throw new CheckpointError(
        path,
        `its storage declares ${storageBytes} bytes but data/${storage.key} holds ${s.entry.size}; refused`,
        key,
      );
    }
    const n = numel(shape);
    let last = offset;
    for (let d = 0; d < shape.length; d++) last += (shape[d]! - 1) * stride[d]!;
    if (
      !Number.isSafeInteger(n * itemsize) ||
      (n > 0 && (last + 1) * itemsize > storageBytes)
    ) {
      throw new CheckpointError(
        path,
        `its view (offset ${offset}, size [${shape.join(", ")}], stride [${
          stride.join(", ")
        }]) reaches past its storage of ${storageBytes} bytes; refused`,
        key,
      );
    }
    const contiguous = isContiguous(shape, stride);
    out.push({
      info: Object.freeze({
        name: key,
        dtype,
        safetensorsDtype: FILE_DTYPE_NAME[dtype],
        shape: Object.freeze([...shape]),
        byteOffset: s.start + offset * itemsize,
        byteLength: n * itemsize,
      }),
      storageStart: s.start,
      ref: value,
      contiguous,
    });
  }
  const rank = (d: DType) => DTYPE_RANK.indexOf(d);
  out.sort((a, b) =>
    rank(b.info.dtype) - rank(a.info.dtype) ||
    (a.info.name < b.info.name ? -1 : a.info.name > b.info.name ? 1 : 0)
  );
  return out;
}
