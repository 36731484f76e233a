/**
 * Property-based fuzzing of the safetensors reader: valid files made by the
 * writer are mutated (bit flips, byte overwrites, truncation, extension, a
 * forged length prefix, header JSON edits) and the reader must either accept a
 * file that an independent check finds valid, returning exactly its tensors,
 * or throw SafetensorsError: never another exception, never a hang, never an
 * allocation sized by a claim in the file.
 *
 * Replay or extend with TINYQ_FUZZ_SEED / TINYQ_FUZZ_RUNS.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import type { DType } from "../src/dtype.ts";
import {
  SafetensorsError,
  SafetensorsFile,
  type TensorEntry,
  writeSafetensors,
} from "../src/io/safetensors.ts";

function envNumber(name: string, fallback: number): number {
  try {
    const v = Deno.env.get(name);
    return v === undefined ? fallback : Number(v);
  } catch {
    return fallback;
  }
}

const SEED = envNumber("TINYQ_FUZZ_SEED", 20260611);
const RUNS = envNumber("TINYQ_FUZZ_RUNS", 1000);
const CASE_TIMEOUT_MS = 2000;

/** The format's sizes, written out again so the oracle shares no table with the reader. */
const SIZE: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  F8_E4M3FNUZ: 1,
  F8_E5M2FNUZ: 1,
  F8_E8M0: 1,
};
const DTYPE: Record<string, DType> = Object.fromEntries(
  Object.keys(SIZE).map((n) => [n, n.toLowerCase() as DType]),
);

// ------------------------------------------------------------------ generators

interface Spec {
  name: string;
  fileDtype: string;
  shape: number[];
  seed: number;
}

const specArb: fc.Arbitrary<Spec> = fc.record({
  name: fc.oneof(
    fc.string({ unit: "binary", maxLength: 6 }),
    fc.constantFrom("a", "b.weight", "0", "10", "__proto__", 'q"\\', ""),
  ).filter((n) => n !== "__metadata__"),
  fileDtype: fc.constantFrom(...Object.keys(SIZE)),
  shape: fc.array(
    fc.oneof(
      { arbitrary: fc.integer({ min: 1, max: 4 }), weight: 5 },
      { arbitrary: fc.constant(0), weight: 1 },
    ),
    { maxLength: 3 },
  ),
  seed: fc.integer({ min: 0, max: 255 }),
});

const fileArb = fc.record({
  specs: fc.uniqueArray(specArb, { selector: (s) => s.name, maxLength: 5 }),
  metadata: fc.option(
    fc.dictionary(
      fc.string({ maxLength: 4 }),
      fc.string({ unit: "binary", maxLength: 6 }),
      { maxKeys: 3 },
    ),
    { nil: undefined },
  ),
});

/** A value that is sometimes valid and sometimes just past the edge. */
const numberArb = fc.oneof(
  { arbitrary: fc.integer({ min: 0, max: 8 }), weight: 6 },
  { arbitrary: fc.integer({ min: 0, max: 64 }), weight: 2 },
  fc.constantFrom(
    -1,
    0.5,
    1.5,
    2 ** 31,
    2 ** 32,
    2 ** 53 - 1,
    2 ** 53,
    2 ** 60,
    1e300,
  ),
);

type HeaderEdit =
  | { op: "offset"; at: number; which: 0 | 1; value: number; relative: boolean }
  | { op: "shape"; at: number; shape: number[] }
  | { op: "dtype"; at: number; dtype: unknown }
  | { op: "duplicate"; at: number; same: boolean }
  | { op: "remove"; at: number }
  | { op: "removeField"; at: number; field: string }
  | { op: "metadata"; value: unknown }
  | { op: "swapOffsets"; at: number; other: number }
  | { op: "shift"; at: number; delta: number }
  | { op: "shiftTail"; at: number; delta: number }
  | { op: "rename"; at: number; name: string };

const at = fc.nat(20);
const headerEditArb: fc.Arbitrary<HeaderEdit> = fc.oneof(
  fc.record({
    op: fc.constant("offset" as const),
    at,
    which: fc.constantFrom(0 as const, 1 as const),
    value: fc.oneof(numberArb, fc.integer({ min: -4, max: 4 })),
    relative: fc.boolean(),
  }),
  fc.record({
    op: fc.constant("shape" as const),
    at,
    shape: fc.array(numberArb, { maxLength: 3 }),
  }),
  fc.record({
    op: fc.constant("dtype" as const),
    at,
    dtype: fc.constantFrom(
      ...Object.keys(SIZE),
      "C64",
      "F4",
      "F33",
      "f32",
      "",
      4,
      null,
    ),
  }),
  fc.record({ op: fc.constant("duplicate" as const), at, same: fc.boolean() }),
  fc.record({ op: fc.constant("remove" as const), at }),
  fc.record({
    op: fc.constant("removeField" as const),
    at,
    field: fc.constantFrom("dtype", "shape", "data_offsets"),
  }),
  fc.record({
    op: fc.constant("metadata" as const),
    value: fc.constantFrom(
      null,
      [],
      "pt",
      { a: 1 },
      { a: "b" },
      { a: null },
      {},
    ),
  }),
  fc.record({ op: fc.constant("swapOffsets" as const), at, other: at }),
  {
    arbitrary: fc.record({
      op: fc.constant("shiftTail" as const),
      at,
      delta: fc.constantFrom(-2, -1, 1, 2),
    }),
    weight: 3,
  },
  fc.record({
    op: fc.constant("shift" as const),
    at,
    delta: fc.integer({ min: -3, max: 3 }),
  }),
  fc.record({
    op: fc.constant("rename" as const),
    at,
    name: fc.constantFrom("__metadata__", "a", "renamed"),
  }),
);

type Mutation =
  | { kind: "none" }
  | { kind: "flip"; flips: { pos: number; bit: number }[] }
  | { kind: "overwrite"; writes: { pos: number; value: number }[] }
  | { kind: "truncate"; cut: number }
  | { kind: "extend"; extra: Uint8Array }
  | { kind: "length"; n: bigint }
  | { kind: "header"; edits: HeaderEdit[]; pad: number; dataDelta: number }
  | { kind: "insertText"; pos: number; text: string; fixLength: boolean };

const headerMutationArb = fc.record({
  kind: fc.constant("header" as const),
  edits: fc.array(headerEditArb, { minLength: 1, maxLength: 3 }),
  pad: fc.integer({ min: 0, max: 9 }),
  dataDelta: fc.oneof(
    { arbitrary: fc.constant(0), weight: 2 },
    { arbitrary: fc.integer({ min: -3, max: 3 }), weight: 1 },
  ),
});

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  // Header edits reach the validation rules; give them most of the runs.
  { arbitrary: headerMutationArb, weight: 6 },
  fc.constant({ kind: "none" as const }),
  fc.record({
    kind: fc.constant("flip" as const),
    flips: fc.array(
      fc.record({ pos: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
      {
        minLength: 1,
        maxLength: 4,
      },
    ),
  }),
  fc.record({
    kind: fc.constant("overwrite" as const),
    writes: fc.array(
      fc.record({
        pos: fc.nat(),
        value: fc.oneof(
          fc.integer({ min: 0, max: 255 }),
          fc.constantFrom(0x22, 0x5c, 0x7b, 0x7d, 0x2c, 0x20, 0xff),
        ),
      }),
      { minLength: 1, maxLength: 4 },
    ),
  }),
  fc.record({
    kind: fc.constant("truncate" as const),
    cut: fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1 })),
  }),
  fc.record({
    kind: fc.constant("extend" as const),
    extra: fc.uint8Array({ minLength: 1, maxLength: 16 }),
  }),
  fc.record({
    kind: fc.constant("length" as const),
    n: fc.oneof(
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      fc.bigInt({ min: 0n, max: 400n }),
      fc.constantFrom(2n ** 40n, 100_000_000n, 100_000_001n),
    ),
  }),
  fc.record({
    kind: fc.constant("insertText" as const),
    pos: fc.nat(),
    text: fc.oneof(
      fc.constantFrom(
        '"',
        "\\",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\u0000",
        "\ufeff",
        "é",
        '"a":1,',
      ),
      fc.string({ unit: "binary", maxLength: 3 }),
    ),
    fixLength: fc.boolean(),
  }),
);

// ------------------------------------------------------------------ helpers

function dataFor(spec: Spec): Uint8Array {
  const n = spec.shape.reduce((a, b) => a * b, 1) * SIZE[spec.fileDtype]!;
  return Uint8Array.from(
    { length: n },
    (_, i) => (i * 37 + spec.seed * 101 + 13) & 0xff,
  );
}

function headerLength(bytes: Uint8Array): bigint {
  return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
}

function withLength(
  header: Uint8Array,
  data: Uint8Array,
  n = BigInt(header.byteLength),
): Uint8Array {
  const out = new Uint8Array(8 + header.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, n, true);
  out.set(header, 8);
  out.set(data, 8 + header.byteLength);
  return out;
}

/** Header as ordered [key, value] pairs, so edits can repeat a key. */
type Pairs = [string, unknown][];

function serialize(pairs: Pairs): string {
  return `{${
    pairs.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")
  }}`;
}

/** Applies one edit; returns how many bytes the data buffer should grow by. */
function applyEdit(pairs: Pairs, edit: HeaderEdit): number {
  if (edit.op === "metadata") {
    const i = pairs.findIndex(([k]) => k === "__metadata__");
    if (i >= 0) pairs[i]![1] = edit.value;
    else pairs.unshift(["__metadata__", edit.value]);
    return 0;
  }
  const tensors = pairs.map((p, i) => [p, i] as const).filter(([[k]]) =>
    k !== "__metadata__"
  );
  if (tensors.length === 0) return 0;
  const [pair, index] = tensors[edit.at % tensors.length]!;
  const entry = pair[1] as Record<string, unknown>;
  switch (edit.op) {
    case "offset": {
      const offsets = Array.isArray(entry.data_offsets)
        ? [...entry.data_offsets]
        : [0, 0];
      offsets[edit.which] = edit.relative
        ? offsets[edit.which]! + edit.value
        : edit.value;
      entry.data_offsets = offsets;
      break;
    }
    case "shape":
      entry.shape = edit.shape;
      break;
    case "dtype":
      entry.dtype = edit.dtype;
      break;
    case "duplicate": {
      const copy = structuredClone(entry);
      if (!edit.same) copy.dtype = "U8";
      pairs.splice(index + 1, 0, [pair[0], copy]);
      break;
    }
    case "remove":
      pairs.splice(index, 1);
      break;
    case "removeField":
      delete entry[edit.field];
      break;
    case "swapOffsets": {
      const [other] = tensors[edit.other % tensors.length]!;
      const o = other[1] as Record<string, unknown>;
      [entry.data_offsets, o.data_offsets] = [
        o.data_offsets,
        entry.data_offsets,
      ];
      break;
    }
    case "rename":
      pair[0] = edit.name;
      break;
    case "shift":
      if (Array.isArray(entry.data_offsets)) {
        entry.data_offsets = entry.data_offsets.map((o) => o + edit.delta);
      }
      break;
    case "shiftTail": {
      // Move this tensor and every later one, and the end of the data with
      // them: a hole or overlap of |delta| bytes that nothing else gives away.
      const start = Array.isArray(entry.data_offsets)
        ? entry.data_offsets[0]
        : undefined;
      if (typeof start !== "number") return 0;
      for (const [[, value]] of tensors) {
        const o = (value as Record<string, unknown>)?.data_offsets;
        if (Array.isArray(o) && typeof o[0] === "number" && o[0] >= start) {
          (value as Record<string, unknown>).data_offsets = o.map((x) =>
            x + edit.delta
          );
        }
      }
      return edit.delta;
    }
  }
  return 0;
}

function mutate(valid: Uint8Array, m: Mutation): Uint8Array {
  const out = valid.slice();
  switch (m.kind) {
    case "none":
      return out;
    case "flip":
      for (const { pos, bit } of m.flips) out[pos % out.length]! ^= 1 << bit;
      return out;
    case "overwrite":
      for (const { pos, value } of m.writes) out[pos % out.length] = value;
      return out;
    case "truncate": // by 1 to all bytes, often just a few
      return out.slice(0, out.length - 1 - (m.cut - 1) % out.length);
    case "extend": {
      const longer = new Uint8Array(out.length + m.extra.length);
      longer.set(out);
      longer.set(m.extra, out.length);
      return longer;
    }
    case "length":
      new DataView(out.buffer).setBigUint64(0, m.n, true);
      return out;
    case "header": {
      const n = Number(headerLength(valid));
      const pairs: Pairs = Object.entries(
        JSON.parse(new TextDecoder().decode(valid.subarray(8, 8 + n))),
      );
      let growth = m.dataDelta;
      for (const edit of m.edits) growth += applyEdit(pairs, edit);
      const header = new TextEncoder().encode(
        serialize(pairs) + " ".repeat(m.pad),
      );
      // Grow or shrink the data too, so edits that move the end can line up.
      const data = valid.subarray(8 + n);
      const resized = new Uint8Array(Math.max(0, data.length + growth));
      resized.set(data.subarray(0, resized.length));
      return withLength(header, resized);
    }
    case "insertText": {
      const n = Number(headerLength(valid));
      const text = new TextEncoder().encode(m.text);
      const pos = 8 + (m.pos % (n + 1));
      const header = new Uint8Array(n + text.length);
      header.set(valid.subarray(8, pos), 0);
      header.set(text, pos - 8);
      header.set(valid.subarray(pos, 8 + n), pos - 8 + text.length);
      return withLength(
        header,
        valid.subarray(8 + n),
        m.fixLength ? undefined : BigInt(n),
      );
    }
  }
}

/**
 * An independent decision on a header built from `pairs` (JSON.stringify
 * output, so no escapes or odd number syntax): BigInt arithmetic, no shared
 * code with the reader.
 */
function oracleAccepts(pairs: Pairs, dataSize: number): boolean {
  const names = pairs.map(([k]) => k);
  if (new Set(names).size !== names.length) return false;
  const spans: [bigint, bigint][] = [];
  for (const [key, value] of pairs) {
    if (key === "__metadata__") {
      if (value === null) continue;
      if (typeof value !== "object" || Array.isArray(value)) return false;
      if (!Object.values(value as object).every((v) => typeof v === "string")) {
        return false;
      }
      continue;
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return false;
    }
    const { dtype, shape, data_offsets: offsets } = value as Record<
      string,
      unknown
    >;
    if (typeof dtype !== "string" || !Object.hasOwn(SIZE, dtype)) return false;
    const isUint = (x: unknown) =>
      typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
    if (!Array.isArray(shape) || !shape.every(isUint)) return false;
    if (
      !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isUint)
    ) return false;
    const [b, e] = offsets.map(BigInt) as [bigint, bigint];
    if (e < b) return false;
    let elements = 1n;
    for (const d of shape) {
      elements *= BigInt(d);
      if (elements > BigInt(Number.MAX_SAFE_INTEGER)) return false;
    }
    const bytes = elements * BigInt(SIZE[dtype]!);
    if (bytes > BigInt(Number.MAX_SAFE_INTEGER) || e - b !== bytes) {
      return false;
    }
    spans.push([b, e]);
  }
  spans.sort((
    x,
    y,
  ) => (x[0] < y[0]
    ? -1
    : x[0] > y[0]
    ? 1
    : x[1] < y[1]
    ? -1
    : x[1] > y[1]
    ? 1
    : 0)
  );
  let pos = 0n;
  for (const [b, e] of spans) {
    if (b !== pos) return false;
    pos = e;
  }
  return pos === BigInt(dataSize);
}

async function withTimeout<T>(work: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} took over ${CASE_TIMEOUT_MS} ms`)),
      CASE_TIMEOUT_MS,
    );
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

type Outcome = { ok: true; file: SafetensorsFile } | {
  ok: false;
  error: SafetensorsError;
};

/** Opens `bytes` as a file; any exception other than SafetensorsError fails the property. */
async function openBytes(path: string, bytes: Uint8Array): Promise<Outcome> {
  await Deno.writeFile(path, bytes);
  const before = Deno.memoryUsage().external;
  const outcome = await withTimeout(
    SafetensorsFile.open(path).then(
      (file): Outcome => ({ ok: true, file }),
      (error: unknown): Outcome => {
        if (error instanceof SafetensorsError) return { ok: false, error };
        throw new Error(`open() threw a non-SafetensorsError: ${error}`, {
          cause: error,
        });
      },
    ),
    "open()",
  );
  // Header bytes plus bookkeeping, never a claimed tensor size.
  const grew = Deno.memoryUsage().external - before;
  assert.ok(
    grew < 16 * 2 ** 20 + 2 * bytes.length,
    `open() grew external memory by ${grew} bytes`,
  );
  if (!outcome.ok) {
    assert.ok(
      outcome.error.message.startsWith(`${path}: `),
      outcome.error.message,
    );
    assert.ok(!outcome.error.message.includes("\n"), outcome.error.message);
  }
  return outcome;
}

/**
 * Checks an accepted file against its own bytes, decoded independently, then
 * re-writes it and checks the copy reads back the same.
 */
async function checkAccepted(
  file: SafetensorsFile,
  bytes: Uint8Array,
  rewritePath: string,
): Promise<void> {
  const n = Number(headerLength(bytes));
  assert.equal(file.headerSize, 8 + n);
  const header = JSON.parse(
    new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n)),
  );
  const names = Object.keys(header).filter((k) => k !== "__metadata__");
  assert.deepEqual(file.tensors.map((t) => t.name).sort(), names.sort());
  assert.deepEqual(file.metadata, header.__metadata__ ?? null);
  let pos = file.headerSize;
  for (const t of file.tensors) {
    const h = header[t.name];
    assert.equal(t.safetensorsDtype, h.dtype);
    assert.equal(t.dtype, DTYPE[h.dtype]);
    assert.deepEqual(t.shape, h.shape);
    assert.equal(t.byteOffset, file.headerSize + h.data_offsets[0]);
    assert.equal(t.byteOffset, pos, "tensors are contiguous, in offset order");
    assert.equal(
      t.byteLength,
      h.shape.reduce((a: number, b: number) => a * b, 1) * SIZE[h.dtype]!,
    );
    pos += t.byteLength;
    const got = await withTimeout(file.readBytes(t.name), "readBytes()");
    assert.deepEqual(
      got,
      bytes.subarray(t.byteOffset, t.byteOffset + t.byteLength),
    );
    const tensor = await withTimeout(file.read(t.name), "read()");
    assert.equal(tensor.dtype, t.dtype);
    assert.deepEqual(tensor.shape, t.shape);
    assert.deepEqual(tensor.bytes(), got);
  }
  assert.equal(pos, bytes.length, "the tensors cover the data buffer exactly");

  const entries: TensorEntry[] = file.tensors.map((t) => ({
    name: t.name,
    dtype: t.dtype,
    shape: t.shape,
    byteLength: t.byteLength,
    bytes: () => file.readBytes(t.name),
  }));
  await writeSafetensors(rewritePath, entries, file.metadata ?? undefined);
  using copy = await SafetensorsFile.open(rewritePath);
  assert.deepEqual(
    copy.tensors.map((t) => [t.name, t.dtype, t.shape, t.byteLength]),
    file.tensors.map((t) => [t.name, t.dtype, t.shape, t.byteLength]),
  );
  assert.deepEqual(copy.metadata, { format: "pt", ...file.metadata });
  for (const t of copy.tensors) {
    assert.deepEqual(
      await copy.readBytes(t.name),
      await file.readBytes(t.name),
    );
  }
}

// ------------------------------------------------------------------ properties

Deno.test(`the reader returns a valid file's tensors or throws SafetensorsError for mutated files (seed ${SEED}, ${RUNS} runs)`, async () => {
  console.log(`safetensors fuzz: seed ${SEED}, ${RUNS} runs`);
  const dir = await Deno.makeTempDir({ prefix: "tinyq_fuzz_" });
  const counts = { accepted: 0, rejected: 0 };
  const kinds = new Map<string, number>();
  try {
    await fc.assert(
      fc.asyncProperty(
        fileArb,
        mutationArb,
        async ({ specs, metadata }, mutation) => {
          const validPath = `${dir}/valid.safetensors`;
          await writeSafetensors(
            validPath,
            specs.map((s) => ({
              name: s.name,
              dtype: DTYPE[s.fileDtype]!,
              shape: s.shape,
              byteLength: dataFor(s).byteLength,
              bytes: () => dataFor(s),
            })),
            metadata,
          );
          const valid = await Deno.readFile(validPath);
          const bytes = mutate(valid, mutation);
          const outcome = await openBytes(`${dir}/mutated.safetensors`, bytes);
          if (!outcome.ok) {
            counts.rejected++;
            kinds.set(
              outcome.error.kind,
              (kinds.get(outcome.error.kind) ?? 0) + 1,
            );
          } else {
            counts.accepted++;
            using file = outcome.file;
            await checkAccepted(file, bytes, `${dir}/rewritten.safetensors`);
          }

          // Outcomes known in advance.
          const headerEnd = 8 + Number(headerLength(valid));
          if (mutation.kind === "none") {
            assert.ok(outcome.ok, "the writer's own file is valid");
          }
          if (mutation.kind === "truncate" || mutation.kind === "extend") {
            assert.ok(!outcome.ok, "a file of the wrong length is refused");
          }
          const dataOnly =
            (mutation.kind === "flip" && mutation.flips.every((f) =>
              f.pos % valid.length >= headerEnd
            )) ||
            (mutation.kind === "overwrite" &&
              mutation.writes.every((w) => w.pos % valid.length >= headerEnd));
          if (dataOnly) {
            assert.ok(outcome.ok, "changing tensor data keeps the file valid");
          }
          if (mutation.kind === "header") {
            const n = Number(headerLength(bytes));
            const pairs: Pairs = Object.entries(
              JSON.parse(
                new TextDecoder().decode(valid.subarray(8, headerEnd)),
              ),
            );
            for (const edit of mutation.edits) {
              applyEdit(pairs, edit);
            }
            const expected = oracleAccepts(pairs, bytes.length - 8 - n);
            assert.equal(
              outcome.ok,
              expected,
              `oracle says ${expected ? "valid" : "invalid"}: ${
                outcome.ok ? "accepted" : outcome.error.message
              }`,
            );
          }
          if (mutation.kind === "length" && mutation.n > 100_000_000n) {
            assert.equal(
              outcome.ok ? "accepted" : outcome.error.kind,
              "HeaderTooLarge",
            );
          }
        },
      ),
      { seed: SEED, numRuns: RUNS },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  console.log(
    `  accepted ${counts.accepted}, rejected ${counts.rejected}:`,
    Object.fromEntries([...kinds].sort()),
  );
  assert.ok(
    counts.accepted > RUNS / 10 && counts.rejected > RUNS / 4,
    "the mutations reach both outcomes",
  );
});

Deno.test("claimed sizes fail fast without allocating them (fake header lengths and shapes)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tinyq_fuzz_" });
  const huge = fc.constantFrom(
    2 ** 20,
    2 ** 26,
    2 ** 30,
    2 ** 31,
    2 ** 32,
    2 ** 40,
    2 ** 53 - 1,
  );
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.array(huge, { minLength: 1, maxLength: 3 }),
        fc.constantFrom(...Object.keys(SIZE)),
        fc.bigInt({ min: 9n, max: 2n ** 64n - 1n }),
        async (shape, dtype, fakeLength) => {
          // A shape claiming up to 2^159 bytes, with offsets that agree where they can.
          const bytes = shape.reduce((a, b) => a * BigInt(b), 1n) *
            BigInt(SIZE[dtype]!);
          const header = `{"t":{"dtype":"${dtype}","shape":[${
            shape.join(",")
          }],"data_offsets":[0,${bytes}]}}`;
          const path = `${dir}/claim.safetensors`;
          const h = new TextEncoder().encode(header);
          const a = await openBytes(path, withLength(h, new Uint8Array(16)));
          assert.ok(!a.ok);
          assert.ok(
            ["ValidationOverflow", "MetadataIncompleteBuffer"].includes(
              a.error.kind,
            ),
            a.error.message,
          );
          const b = await openBytes(
            path,
            withLength(h, new Uint8Array(16), fakeLength),
          );
          assert.ok(!b.ok);
          assert.ok(
            [
              "HeaderTooLarge",
              "InvalidHeaderLength",
              "InvalidHeaderDeserialization",
              "ValidationOverflow",
              "MetadataIncompleteBuffer",
            ].includes(b.error.kind),
            b.error.message,
          );
        },
      ),
      { seed: SEED, numRuns: 200 },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
