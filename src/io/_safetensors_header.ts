/**
 * Parsing and validation of a safetensors header, with the reference
 * implementation's rules (huggingface/safetensors `tensor.rs`) plus duplicate
 * names and exact integer literals. Pure functions over bytes already read, so
 * the rules are tested without touching a disk.
 *
 * @module
 */

import { type DType, DTYPE_SIZE } from "../dtype.ts";
import {
  DTYPE_BY_FILE_NAME,
  UNSUPPORTED_FILE_DTYPES,
} from "./safetensors_dtype.ts";
import {
  SafetensorsError,
  type SafetensorsErrorKind,
} from "./_safetensors_error.ts";
import { findDuplicateKey } from "./_safetensors_keys.ts";

/** Largest header the reference implementation accepts, in bytes. */
export const MAX_HEADER_SIZE = 100_000_000;

/** One tensor entry of a validated header. */
export interface HeaderEntry {
  name: string;
  dtype: DType;
  fileDtype: string;
  shape: number[];
  /** Offsets into the data buffer (after the header), end exclusive. */
  begin: number;
  end: number;
}

/** A validated header. */
export interface ParsedHeader {
  metadata: Record<string, string> | null;
  /** Sorted by data offset. */
  entries: HeaderEntry[];
}

/**
 * Checks the 8-byte length prefix against the file size and returns the
 * header length N. Runs before anything of size N is allocated.
 */
export function readHeaderLength(
  file: string,
  prefix: Uint8Array,
  fileSize: number,
): number {
  if (fileSize < 8) {
    throw new SafetensorsError(
      "HeaderTooSmall",
      file,
      `file is ${countBytes(fileSize)}, too short for the 8-byte header length`,
    );
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8)
    .getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_SIZE)) {
    throw new SafetensorsError(
      "HeaderTooLarge",
      file,
      `header length ${n} is over the limit of ${MAX_HEADER_SIZE} bytes`,
    );
  }
  if (8n + n > BigInt(fileSize)) {
    throw new SafetensorsError(
      "InvalidHeaderLength",
      file,
      `header length ${n} runs past the end of the file (${
        countBytes(fileSize)
      })`,
    );
  }
  return Number(n);
}

/** A number whose JSON text is not a plain non-negative safe integer. */
class RawNumber {
  constructor(readonly source: string, readonly tooLarge: boolean) {}
}

const PLAIN_UINT = /^(?:0|[1-9][0-9]*)$/;

type Reviver = (
  key: string,
  value: unknown,
  context?: { source?: string },
) => unknown;

// `1.0`, `1e2` and `-0` parse to integers, but the reference reads shapes and
// offsets as unsigned integers and refuses them; the raw source text (JSON.parse
// source access) keeps that distinction and stops 2^53 + 1 rounding to 2^53.
const keepRawNumbers: Reviver = (_key, value, context) => {
  if (typeof value !== "number") return value;
  const source = context?.source ?? String(value);
  const plain = PLAIN_UINT.test(source);
  if (plain && value <= Number.MAX_SAFE_INTEGER) return value;
  return new RawNumber(source, plain);
};

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Parses and validates the N header bytes of a file of `fileSize` bytes.
 * Throws {@linkcode SafetensorsError} for every rule a file can break.
 */
export function parseHeader(
  file: string,
  bytes: Uint8Array,
  fileSize: number,
): ParsedHeader {
  const fail: Fail = (kind, detail, tensor) => {
    throw new SafetensorsError(kind, file, detail, tensor);
  };

  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    return fail("InvalidHeader", "header is not valid UTF-8");
  }
  // Leading JSON whitespace is allowed: writers may pad the header at either
  // end, and huggingface/safetensors accepts (and tests) both.
  const start = text.search(/[^ \t\n\r]/);
  if (start < 0) fail("InvalidHeader", "header is empty");
  const first = text.codePointAt(start)!;
  if (first !== 0x7b) {
    // A BOM or control character would be invisible in the message.
    const shown = first > 0x20 && first < 0x7f
      ? JSON.stringify(String.fromCodePoint(first))
      : `U+${first.toString(16).toUpperCase().padStart(4, "0")}`;
    fail(
      "InvalidHeader",
      `header is not a JSON object (it starts with ${shown})`,
    );
  }

  let root: Record<string, unknown>;
  try {
    root = (JSON.parse as (t: string, r: Reviver) => unknown)(
      text,
      keepRawNumbers,
    ) as Record<string, unknown>;
  } catch (e) {
    // Deep nesting exhausts the reviver's recursion (serde_json, used by the
    // reference, stops at depth 128 too).
    const why = e instanceof RangeError
      ? "it nests too deeply"
      : e instanceof Error
      ? e.message
      : String(e);
    return fail(
      "InvalidHeaderDeserialization",
      `header is not valid JSON: ${oneLine(why)}`,
    );
  }

  const dup = findDuplicateKey(text);
  if (dup !== null) {
    const [outer] = dup.path;
    if (outer === undefined) {
      if (dup.key === "__metadata__") {
        fail("InvalidMetadata", "__metadata__ appears twice in the header");
      }
      fail("DuplicateTensor", "name appears twice in the header", dup.key);
    }
    if (outer === "__metadata__") {
      fail(
        "InvalidMetadata",
        `__metadata__ has the key ${quote(dup.key)} twice`,
      );
    }
    fail(
      "TensorInvalidInfo",
      `entry has the key ${quote(dup.key)} twice`,
      outer,
    );
  }

  let metadata: Record<string, string> | null = null;
  const entries: HeaderEntry[] = [];
  for (const [name, value] of Object.entries(root)) {
    if (name === "__metadata__") {
      metadata = checkMetadata(value, fail);
    } else {
      entries.push(checkEntry(name, value, fail));
    }
  }

  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev: HeaderEntry | undefined;
  for (const e of entries) {
    const offsets = `data_offsets [${e.begin}, ${e.end}]`;
    if (e.begin > pos) {
      const gap = `${countBytes(e.begin - pos)} unused`;
      fail(
        "InvalidOffset",
        prev === undefined
          ? `${offsets} leave ${gap} at the start of the data buffer`
          : `${offsets} leave ${gap} after tensor ${
            quote(prev.name)
          }, which ends at ${pos}`,
        e.name,
      );
    }
    if (e.begin < pos) {
      fail(
        "InvalidOffset",
        `${offsets} overlap tensor ${quote(prev!.name)}, which ends at ${pos}`,
        e.name,
      );
    }
    pos = e.end;
    prev = e;
  }

  const headerEnd = 8 + bytes.byteLength;
  const dataSize = fileSize - headerEnd;
  if (pos > dataSize) {
    const e = entries.find((x) => x.end > dataSize)!;
    fail(
      "MetadataIncompleteBuffer",
      `data_offsets [${e.begin}, ${e.end}] run past the end of the file ` +
        `(the data buffer holds ${countBytes(dataSize)})`,
      e.name,
    );
  }
  if (pos < dataSize) {
    fail(
      "MetadataIncompleteBuffer",
      `${countBytes(dataSize - pos, "trailing byte")} after the last tensor ` +
        `(tensor data ends at byte ${headerEnd + pos} of ${fileSize})`,
    );
  }
  return { metadata, entries };
}

type Fail = (
  kind: SafetensorsErrorKind,
  detail: string,
  tensor?: string,
) => never;

function checkMetadata(
  value: unknown,
  fail: Fail,
): Record<string, string> | null {
  // The reference reads `__metadata__` as an optional map: null means none.
  if (value === null) return null;
  if (!isObject(value)) {
    fail(
      "InvalidMetadata",
      `__metadata__ must be an object of strings, got ${describe(value)}`,
    );
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== "string") {
      fail(
        "InvalidMetadata",
        `__metadata__ value of ${quote(k)} must be a string, got ${
          describe(v)
        }`,
      );
    }
    Object.defineProperty(out, k, {
      value: v,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

function checkEntry(name: string, value: unknown, fail: Fail): HeaderEntry {
  if (!isObject(value)) {
    fail(
      "TensorInvalidInfo",
      `entry is ${
        describe(value)
      }, not an object with dtype, shape and data_offsets`,
      name,
    );
  }
  const entry = value as Record<string, unknown>;
  for (const field of ["dtype", "shape", "data_offsets"]) {
    if (!Object.hasOwn(entry, field)) {
      const kind = field === "dtype"
        ? "InvalidDtype"
        : field === "shape"
        ? "InvalidShape"
        : "InvalidOffset";
      fail(kind, `entry has no "${field}"`, name);
    }
  }

  const fileDtype = entry.dtype;
  if (typeof fileDtype !== "string") {
    return fail(
      "InvalidDtype",
      `dtype must be a string, got ${describe(fileDtype)}`,
      name,
    );
  }
  const dtype = DTYPE_BY_FILE_NAME.get(fileDtype);
  if (dtype === undefined) {
    return fail(
      "InvalidDtype",
      UNSUPPORTED_FILE_DTYPES.has(fileDtype)
        ? `dtype ${fileDtype} is not supported by TinyQ`
        : `unknown dtype ${quote(fileDtype)}`,
      name,
    );
  }

  const rawShape = entry.shape;
  if (!Array.isArray(rawShape)) {
    return fail(
      "InvalidShape",
      `shape must be an array of non-negative integers, got ${
        describe(rawShape)
      }`,
      name,
    );
  }
  const shapeText = `shape ${list(rawShape)}`;
  let numel = 1;
  for (const d of rawShape) {
    if (d instanceof RawNumber && d.tooLarge) {
      fail(
        "ValidationOverflow",
        `${shapeText} has a dimension over 2^53 - 1`,
        name,
      );
    }
    if (typeof d !== "number") {
      fail(
        "InvalidShape",
        `${shapeText} has the invalid dimension ${describe(d)} ` +
          `(dimensions are non-negative integers)`,
        name,
      );
    }
    numel *= d as number;
    if (numel > Number.MAX_SAFE_INTEGER) {
      fail(
        "ValidationOverflow",
        `${shapeText} has more than 2^53 - 1 elements`,
        name,
      );
    }
  }
  const shape = rawShape as number[];
  const need = numel * DTYPE_SIZE[dtype];
  if (need > Number.MAX_SAFE_INTEGER) {
    fail(
      "ValidationOverflow",
      `dtype ${fileDtype} × ${shapeText} is more than 2^53 - 1 bytes`,
      name,
    );
  }

  const offsets = entry.data_offsets;
  if (!Array.isArray(offsets) || offsets.length !== 2) {
    return fail(
      "InvalidOffset",
      `data_offsets must be [begin, end] with non-negative integers, got ${
        describe(offsets)
      }`,
      name,
    );
  }
  const offsetsText = `data_offsets ${list(offsets)}`;
  for (const o of offsets) {
    if (o instanceof RawNumber && o.tooLarge) {
      fail(
        "ValidationOverflow",
        `${offsetsText} are over 2^53 - 1`,
        name,
      );
    }
    if (typeof o !== "number") {
      fail(
        "InvalidOffset",
        `${offsetsText} must be non-negative integers`,
        name,
      );
    }
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) {
    fail("InvalidOffset", `${offsetsText} end before they begin`, name);
  }
  if (end - begin !== need) {
    fail(
      "TensorInvalidInfo",
      `${offsetsText} span ${
        countBytes(end - begin)
      } but dtype ${fileDtype} × ` +
        `${shapeText} needs ${need}`,
      name,
    );
  }
  return { name, dtype, fileDtype, shape: [...shape], begin, end };
}

function isObject(v: unknown): boolean {
  return typeof v === "object" && v !== null && !Array.isArray(v) &&
    !(v instanceof RawNumber);
}

/** A short one-line rendering of a JSON value for messages. */
function describe(v: unknown): string {
  if (v instanceof RawNumber) return v.source;
  if (typeof v === "string") return quote(v);
  if (Array.isArray(v)) {
    return v.length <= 8 && v.every((x) => !isObject(x) && !Array.isArray(x))
      ? list(v)
      : `an array of ${v.length} items`;
  }
  if (typeof v === "object" && v !== null) return "an object";
  return String(v);
}

function list(items: readonly unknown[]): string {
  if (items.length > 16) {
    return `[${items.slice(0, 16).map(describe).join(", ")}, …]`;
  }
  return `[${items.map(describe).join(", ")}]`;
}

/** `1 byte`, `2 bytes`. */
function countBytes(n: number, unit = "byte"): string {
  return `${n} ${unit}${n === 1 ? "" : "s"}`;
}

/** JSON-quotes a string, shortened past 80 characters. */
function quote(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 77)}...` : s);
}

function oneLine(s: string): string {
  // deno-lint-ignore no-control-regex
  return s.replace(/[\u0000-\u001f\u007f\u2028\u2029]+/g, " ");
}
