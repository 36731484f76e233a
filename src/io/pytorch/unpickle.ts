/**
 * A restricted unpickler for the `data.pkl` of a `torch.save` state dict,
 * in the spirit of `torch.load(weights_only=True)` but narrower: it builds
 * plain values (numbers, strings, tuples, lists, dicts) and recognises
 * exactly the globals a state dict needs — `collections.OrderedDict`,
 * `torch._utils._rebuild_tensor_v2`/`_v3`, `torch._utils._rebuild_parameter`,
 * the storage types of every dtype and the dtypes themselves. Any other
 * global is refused, with one line naming it, the moment the opcode that
 * names it is read. Nothing is ever called: "rebuilding" a tensor records
 * its storage, offset, shape and strides, and the bytes are read later.
 *
 * Bounded work: lengths are checked against the bytes left before anything
 * is allocated, the stack, the mark nesting and the memo have limits, and
 * nothing here recurses, so a crafted pickle costs at most its own length.
 *
 * @module
 */

import type { DType } from "../../dtype.ts";
import { CheckpointError } from "../checkpoint_error.ts";

/** A storage named by a persistent id: `('storage', type, key, location, numel)`. */
export interface StorageRef {
  readonly kind: "storage";
  /** The key: the storage's data is the zip entry `<archive>/data/<key>`. */
  readonly key: string;
  /** The element type, or null for an `UntypedStorage` (dtype given by the tensor). */
  readonly dtype: DType | null;
  /** Elements (typed storage) or bytes (untyped storage). */
  readonly numel: number;
}

/** A tensor as `_rebuild_tensor_v2`/`_v3` describes it. */
export interface TensorRef {
  readonly kind: "tensor";
  readonly storage: StorageRef;
  readonly dtype: DType;
  /** Offset into the storage, in elements. */
  readonly offset: number;
  readonly shape: readonly number[];
  /** Strides in elements. */
  readonly stride: readonly number[];
}

/** An allowed global, before it is used. */
export interface GlobalRef {
  readonly kind: "global";
  readonly name: string;
}

/** A Python tuple. */
export interface TupleValue {
  readonly kind: "tuple";
  readonly items: PickleValue[];
}

/** A Python list. */
export interface ListValue {
  readonly kind: "list";
  readonly items: PickleValue[];
}

/** A Python dict (or OrderedDict): keys are strings or numbers, in insertion order. */
export interface DictValue {
  readonly kind: "dict";
  readonly map: Map<string | number | boolean | null, PickleValue>;
}

/** What the restricted unpickler can produce. */
export type PickleValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | TupleValue
  | ListValue
  | DictValue
  | GlobalRef
  | StorageRef
  | TensorRef;

/** Legacy storage classes (`torch.FloatStorage`) and their dtypes; null = known but unsupported. */
const STORAGE_TYPES: Readonly<Record<string, DType | null>> = {
  DoubleStorage: "f64",
  FloatStorage: "f32",
  HalfStorage: "f16",
  BFloat16Storage: "bf16",
  LongStorage: "i64",
  IntStorage: "i32",
  ShortStorage: "i16",
  CharStorage: "i8",
  ByteStorage: "u8",
  BoolStorage: "bool",
  ComplexFloatStorage: null,
  ComplexDoubleStorage: null,
  QInt8Storage: null,
  QInt32Storage: null,
  QUInt8Storage: null,
  QUInt4x2Storage: null,
  QUInt2x4Storage: null,
};

/** `torch.<dtype>` globals (arguments of `_rebuild_tensor_v3`). */
const TORCH_DTYPES: Readonly<Record<string, DType | null>> = {
  float64: "f64",
  double: "f64",
  float32: "f32",
  float: "f32",
  float16: "f16",
  half: "f16",
  bfloat16: "bf16",
  int64: "i64",
  long: "i64",
  int32: "i32",
  int: "i32",
  int16: "i16",
  short: "i16",
  int8: "i8",
  uint8: "u8",
  uint16: "u16",
  uint32: "u32",
  uint64: "u64",
  bool: "bool",
  float8_e4m3fn: "f8_e4m3",
  float8_e5m2: "f8_e5m2",
  float8_e4m3fnuz: "f8_e4m3fnuz",
  float8_e5m2fnuz: "f8_e5m2fnuz",
  float8_e8m0fnu: "f8_e8m0",
  complex64: null,
  complex128: null,
  cfloat: null,
  cdouble: null,
};

const CALLABLES = new Set([
  "collections.OrderedDict",
  "torch._utils._rebuild_tensor_v2",
  "torch._utils._rebuild_tensor_v3",
  "torch._utils._rebuild_parameter",
  "torch._utils._rebuild_parameter_with_state",
]);

/** Most items on the stack (a state dict needs a few thousand). */
const MAX_STACK = 10_000;
/** Deepest MARK nesting (a state dict needs three). */
const MAX_MARKS = 64;
/** Most memo entries. */
const MAX_MEMO = 10_000_000;

/** Whether a global `module.name` is one this unpickler knows. */
function allowedGlobal(module: string, name: string): boolean {
  const full = `${module}.${name}`;
  if (CALLABLES.has(full)) return true;
  if (module === "torch" && Object.hasOwn(STORAGE_TYPES, name)) return true;
  if (module === "torch" && Object.hasOwn(TORCH_DTYPES, name)) return true;
  return full === "torch.storage.UntypedStorage" ||
    full === "torch.UntypedStorage";
}

const OPCODE_NAMES: Record<number, string> = {
  0x69: "INST",
  0x6f: "OBJ",
  0x81: "NEWOBJ",
  0x92: "NEWOBJ_EX",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
  0x50: "PERSID",
  0x96: "BYTEARRAY8",
  0x97: "NEXT_BUFFER",
  0x98: "READONLY_BUFFER",
  0x8f: "EMPTY_SET",
  0x90: "ADDITEMS",
  0x91: "FROZENSET",
  0x53: "STRING",
  0x54: "BINSTRING",
  0x55: "SHORT_BINSTRING",
  0x56: "UNICODE",
};

function isTuple(v: PickleValue): v is TupleValue {
  return typeof v === "object" && v !== null && !(v instanceof Uint8Array) &&
    v.kind === "tuple";
}

/** A short description of a value for error messages (never recursive). */
export function describe(v: PickleValue): string {
  if (v === null) return "None";
  if (typeof v === "boolean") return v ? "True" : "False";
  if (typeof v === "number" || typeof v === "bigint") return `the number ${v}`;
  if (typeof v === "string") {
    return `the string ${JSON.stringify(v.slice(0, 40))}`;
  }
  if (v instanceof Uint8Array) return `${v.length} raw bytes`;
  switch (v.kind) {
    case "tuple":
      return `a tuple of ${v.items.length}`;
    case "list":
      return `a list of ${v.items.length}`;
    case "dict":
      return `a dict of ${v.map.size}`;
    case "global":
      return v.name;
    case "storage":
      return "a bare storage";
    case "tensor":
      return "a tensor";
  }
}

/**
 * Unpickles `bytes` (the `data.pkl` of `path`) under the rules above.
 * Throws {@linkcode CheckpointError} naming `path` for anything outside
 * them.
 */
export function unpickle(bytes: Uint8Array, path: string): PickleValue {
  const fail = (detail: string): never => {
    throw new CheckpointError(path, detail);
  };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const ascii = new TextDecoder("latin1");
  const stack: PickleValue[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PickleValue>();
  let pos = 0;

  const need = (n: number, what: string): void => {
    if (n > bytes.length - pos) {
      fail(
        `data.pkl: ${what} of ${n} bytes at byte ${pos}, but only ${
          bytes.length - pos
        } are left; refused`,
      );
    }
  };
  const u8 = (): number => {
    need(1, "an argument");
    return bytes[pos++]!;
  };
  const u16 = (): number => {
    need(2, "an argument");
    const v = view.getUint16(pos, true);
    pos += 2;
    return v;
  };
  const u32 = (): number => {
    need(4, "an argument");
    const v = view.getUint32(pos, true);
    pos += 4;
    return v;
  };
  const i32 = (): number => {
    need(4, "an argument");
    const v = view.getInt32(pos, true);
    pos += 4;
    return v;
  };
  const u64 = (): number => {
    need(8, "an argument");
    const v = view.getBigUint64(pos, true);
    pos += 8;
    return v > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(v);
  };
  const take = (n: number, what: string): Uint8Array => {
    need(n, what);
    const b = bytes.subarray(pos, pos + n);
    pos += n;
    return b;
  };
  const line = (): string => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0 || end - pos > 1024) {
      fail(`data.pkl: unterminated line at byte ${pos}`);
    }
    const s = ascii.decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const text = (n: number): string => {
    const b = take(n, "a string");
    try {
      return utf8.decode(b);
    } catch {
      return fail(`data.pkl: a string at byte ${pos - n} is not UTF-8`);
    }
  };
  const push = (v: PickleValue): void => {
    if (stack.length >= MAX_STACK) {
      fail(
        `data.pkl: more than ${MAX_STACK} values on the stack; refused (not a state dict)`,
      );
    }
    stack.push(v);
  };
  const pop = (): PickleValue => {
    if (
      stack.length === 0 || (marks.length > 0 && stack.length <= marks.at(-1)!)
    ) {
      fail(`data.pkl: stack underflow at byte ${pos - 1}`);
    }
    return stack.pop()!;
  };
  const top = (): PickleValue => {
    if (stack.length === 0) {
      fail(`data.pkl: stack underflow at byte ${pos - 1}`);
    }
    return stack[stack.length - 1]!;
  };
  const popMark = (): PickleValue[] => {
    const m = marks.pop();
    if (m === undefined) fail(`data.pkl: no MARK before byte ${pos - 1}`);
    return stack.splice(m!);
  };
  const put = (i: number): void => {
    if (memo.size >= MAX_MEMO && !memo.has(i)) {
      fail("data.pkl: memo too large; refused");
    }
    memo.set(i, top());
  };
  const get = (i: number): void => {
    if (!memo.has(i)) fail(`data.pkl: memo entry ${i} was never stored`);
    push(memo.get(i)!);
  };
  const global = (module: string, name: string): GlobalRef => {
    if (!allowedGlobal(module, name)) {
      fail(
        `refuses the pickled global ${module}.${name}: only a state dict's ` +
          `tensors and dicts are read, and nothing in the file is ever run`,
      );
    }
    return { kind: "global", name: `${module}.${name}` };
  };
  const dictKey = (k: PickleValue): string | number | boolean | null => {
    if (
      k === null || typeof k === "string" || typeof k === "number" ||
      typeof k === "boolean"
    ) return k;
    return fail(`data.pkl: a dict key is ${describe(k)}; not a state dict`);
  };
  const setItems = (d: PickleValue, items: PickleValue[]): void => {
    if (
      typeof d !== "object" || d === null || d instanceof Uint8Array ||
      d.kind !== "dict"
    ) {
      return fail(`data.pkl: SETITEM on ${describe(d)}`);
    }
    if (items.length % 2 !== 0) fail("data.pkl: SETITEMS with an odd count");
    for (let i = 0; i < items.length; i += 2) {
      d.map.set(dictKey(items[i]!), items[i + 1]!);
    }
  };
  const append = (l: PickleValue, items: PickleValue[]): void => {
    if (
      typeof l !== "object" || l === null || l instanceof Uint8Array ||
      l.kind !== "list"
    ) {
      return fail(`data.pkl: APPEND on ${describe(l)}`);
    }
    for (const v of items) l.items.push(v);
  };

  for (;;) {
    const at = pos;
    const op = u8();
    switch (op) {
      case 0x80: { // PROTO
        const v = u8();
        if (v > 5) fail(`data.pkl: pickle protocol ${v} is unknown`);
        break;
      }
      case 0x95: // FRAME
        u64();
        break;
      case 0x2e: { // STOP
        if (stack.length !== 1 || marks.length !== 0) {
          fail("data.pkl: STOP with a malformed stack");
        }
        if (pos !== bytes.length) fail("data.pkl: bytes after STOP");
        return stack[0]!;
      }
      case 0x28: // MARK
        if (marks.length >= MAX_MARKS) {
          fail(
            `data.pkl: MARKs nested more than ${MAX_MARKS} deep; refused (not a state dict)`,
          );
        }
        marks.push(stack.length);
        break;
      case 0x29:
        push({ kind: "tuple", items: [] });
        break;
      case 0x7d:
        push({ kind: "dict", map: new Map() });
        break;
      case 0x5d:
        push({ kind: "list", items: [] });
        break;
      case 0x74: // TUPLE
        push({ kind: "tuple", items: popMark() });
        break;
      case 0x85:
      case 0x86:
      case 0x87: {
        const n = op - 0x84;
        const items: PickleValue[] = [];
        for (let i = 0; i < n; i++) items.unshift(pop());
        push({ kind: "tuple", items });
        break;
      }
      case 0x6c: // LIST
        push({ kind: "list", items: popMark() });
        break;
      case 0x64: { // DICT
        const d: DictValue = { kind: "dict", map: new Map() };
        setItems(d, popMark());
        push(d);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        append(top(), [v]);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x30: // POP
        if (marks.length > 0 && stack.length === marks.at(-1)) marks.pop();
        else pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        push(top());
        break;
      case 0x71:
        put(u8());
        break;
      case 0x72:
        put(u32());
        break;
      case 0x94:
        put(memo.size);
        break;
      case 0x70: {
        const n = Number(line());
        if (!Number.isSafeInteger(n) || n < 0) fail("data.pkl: bad PUT index");
        put(n);
        break;
      }
      case 0x68:
        get(u8());
        break;
      case 0x6a:
        get(u32());
        break;
      case 0x67: {
        const n = Number(line());
        if (!Number.isSafeInteger(n) || n < 0) fail("data.pkl: bad GET index");
        get(n);
        break;
      }
      case 0x4a:
        push(i32());
        break;
      case 0x4b:
        push(u8());
        break;
      case 0x4d:
        push(u16());
        break;
      case 0x49: { // INT (text): "00"/"01" are False/True
        const s = line();
        if (s === "00" || s === "01") push(s === "01");
        else {
          if (!/^-?\d{1,18}$/.test(s)) fail("data.pkl: bad INT");
          push(Number(s));
        }
        break;
      }
      case 0x4c: { // LONG (text)
        const s = line().replace(/L$/, "");
        if (!/^-?\d{1,40}$/.test(s)) fail("data.pkl: bad LONG");
        const b = BigInt(s);
        push(
          b >= BigInt(Number.MIN_SAFE_INTEGER) &&
            b <= BigInt(Number.MAX_SAFE_INTEGER)
            ? Number(b)
            : b,
        );
        break;
      }
      case 0x8a:
      case 0x8b: { // LONG1, LONG4
        const n = op === 0x8a ? u8() : i32();
        if (n < 0 || n > 16) {
          fail(`data.pkl: an integer of ${n} bytes; refused`);
        }
        const b = take(n, "an integer");
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
        if (n > 0 && b[n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        push(
          v >= BigInt(Number.MIN_SAFE_INTEGER) &&
            v <= BigInt(Number.MAX_SAFE_INTEGER)
            ? Number(v)
            : v,
        );
        break;
      }
      case 0x47: { // BINFLOAT, big-endian
        need(8, "a float");
        push(view.getFloat64(pos, false));
        pos += 8;
        break;
      }
      case 0x46: { // FLOAT (text)
        const v = Number(line());
        if (Number.isNaN(v)) fail("data.pkl: bad FLOAT");
        push(v);
        break;
      }
      case 0x4e:
        push(null);
        break;
      case 0x88:
        push(true);
        break;
      case 0x89:
        push(false);
        break;
      case 0x58:
        push(text(u32()));
        break;
      case 0x8c:
        push(text(u8()));
        break;
      case 0x8d:
        push(text(u64()));
        break;
      case 0x43:
        push(take(u8(), "bytes").slice());
        break;
      case 0x42:
        push(take(u32(), "bytes").slice());
        break;
      case 0x8e:
        push(take(u64(), "bytes").slice());
        break;
      case 0x63: { // GLOBAL
        const module = line();
        const name = line();
        push(global(module, name));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== "string" || typeof name !== "string") {
          fail("data.pkl: STACK_GLOBAL of non-strings");
        }
        push(global(module as string, name as string));
        break;
      }
      case 0x51: { // BINPERSID
        push(persistent(pop(), path));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        const fn = pop();
        push(reduce(fn, args, path));
        break;
      }
      case 0x62: { // BUILD: state set on an OrderedDict (its `_metadata`) is ignored
        const state = pop();
        const obj = top();
        const isDict = (v: PickleValue) =>
          typeof v === "object" && v !== null && !(v instanceof Uint8Array) &&
          v.kind === "dict";
        if (!isDict(obj)) fail(`data.pkl: BUILD on ${describe(obj)}; refused`);
        if (!isDict(state) && !isTuple(state) && state !== null) {
          fail(`data.pkl: BUILD with ${describe(state)}; refused`);
        }
        break;
      }
      default: {
        const name = OPCODE_NAMES[op];
        fail(
          `data.pkl: opcode 0x${op.toString(16).padStart(2, "0")}${
            name ? ` (${name})` : ""
          } at byte ${at} is not one a state dict uses; refused`,
        );
      }
    }
  }
}

function nonNegativeInt(v: PickleValue): number | null {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0 ? v : null;
}

function intTuple(v: PickleValue): number[] | null {
  if (!isTuple(v)) return null;
  const out: number[] = [];
  for (const x of v.items) {
    const n = nonNegativeInt(x);
    if (n === null) return null;
    out.push(n);
  }
  return out;
}

function persistent(pid: PickleValue, path: string): StorageRef {
  const bad = (): never => {
    throw new CheckpointError(
      path,
      `data.pkl: persistent id ${
        describe(pid)
      } is not ('storage', type, key, location, size); refused`,
    );
  };
  if (!isTuple(pid) || pid.items.length !== 5 || pid.items[0] !== "storage") {
    bad();
  }
  const [, type, key, location, size] = (pid as TupleValue).items;
  if (typeof key !== "string" || typeof location !== "string") bad();
  const numel = nonNegativeInt(size!);
  if (numel === null) bad();
  if (
    typeof type !== "object" || type === null || type instanceof Uint8Array ||
    type.kind !== "global"
  ) {
    return bad();
  }
  const short = type.name.replace(/^torch\.(storage\.)?/, "");
  if (short === "UntypedStorage") {
    return { kind: "storage", key: key as string, dtype: null, numel: numel! };
  }
  if (!Object.hasOwn(STORAGE_TYPES, short)) bad();
  const dtype = STORAGE_TYPES[short]!;
  if (dtype === null) {
    throw new CheckpointError(
      path,
      `data.pkl: holds a ${type.name}; complex and quantized torch tensors are not supported`,
    );
  }
  return { kind: "storage", key: key as string, dtype, numel: numel! };
}

function reduce(fn: PickleValue, args: PickleValue, path: string): PickleValue {
  const fail = (detail: string): never => {
    throw new CheckpointError(path, `data.pkl: ${detail}; refused`);
  };
  if (
    typeof fn !== "object" || fn === null || fn instanceof Uint8Array ||
    fn.kind !== "global" || !CALLABLES.has(fn.name)
  ) {
    return fail(
      `REDUCE calls ${
        describe(fn)
      }, which is not a constructor of a state dict`,
    );
  }
  if (!isTuple(args)) {
    return fail(`REDUCE of ${fn.name} without an argument tuple`);
  }
  const a = args.items;
  switch (fn.name) {
    case "collections.OrderedDict":
      if (a.length !== 0) fail("OrderedDict built from arguments");
      return { kind: "dict", map: new Map() };
    case "torch._utils._rebuild_parameter":
    case "torch._utils._rebuild_parameter_with_state": {
      const t = a[0];
      if (
        typeof t !== "object" || t === null || t instanceof Uint8Array ||
        t.kind !== "tensor"
      ) {
        return fail(`${fn.name} of ${describe(t ?? null)}`);
      }
      return t;
    }
    default: { // _rebuild_tensor_v2 / _v3
      const v3 = fn.name.endsWith("_v3");
      if (a.length < (v3 ? 7 : 6) || a.length > (v3 ? 8 : 7)) {
        fail(`${fn.name} with ${a.length} arguments`);
      }
      const storage = a[0]!;
      if (
        typeof storage !== "object" || storage === null ||
        storage instanceof Uint8Array || storage.kind !== "storage"
      ) {
        return fail(`${fn.name} of ${describe(storage)} instead of a storage`);
      }
      const offset = nonNegativeInt(a[1]!);
      const shape = intTuple(a[2]!);
      const stride = intTuple(a[3]!);
      if (
        offset === null || shape === null || stride === null ||
        shape.length !== stride.length
      ) {
        return fail(`${fn.name} with a bad offset, size or stride`);
      }
      let dtype: DType | null = storage.dtype;
      if (v3) {
        const d = a[6]!;
        const name =
          typeof d === "object" && d !== null && !(d instanceof Uint8Array) &&
            d.kind === "global" && d.name.startsWith("torch.")
            ? d.name.slice(6)
            : "";
        if (!Object.hasOwn(TORCH_DTYPES, name)) {
          return fail(`${fn.name} with dtype ${describe(d)}`);
        }
        dtype = TORCH_DTYPES[name]!;
        if (dtype === null) {
          throw new CheckpointError(
            path,
            `data.pkl: holds a torch.${name} tensor; complex tensors are not supported`,
          );
        }
        if (storage.dtype !== null && storage.dtype !== dtype) {
          fail(`${fn.name}: a ${dtype} tensor on a ${storage.dtype} storage`);
        }
      }
      if (dtype === null) {
        return fail(`${fn.name}: an untyped storage without a dtype`);
      }
      return { kind: "tensor", storage, dtype, offset, shape, stride };
    }
  }
}
