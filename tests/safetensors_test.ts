import assert from "node:assert/strict";
import type { DType } from "../src/dtype.ts";
import {
  parseSafetensorsDtype,
  safetensorsDtypeName,
  SafetensorsError,
  type SafetensorsErrorKind,
  SafetensorsFile,
  type TensorEntry,
  writeSafetensors,
} from "../src/io/safetensors.ts";
import { withDir } from "./_checkpoint_fixtures.ts";

const DTYPES: [DType, string, number][] = [
  ["f64", "F64", 8],
  ["f32", "F32", 4],
  ["f16", "F16", 2],
  ["bf16", "BF16", 2],
  ["i64", "I64", 8],
  ["i32", "I32", 4],
  ["i16", "I16", 2],
  ["i8", "I8", 1],
  ["u64", "U64", 8],
  ["u32", "U32", 4],
  ["u16", "U16", 2],
  ["u8", "U8", 1],
  ["bool", "BOOL", 1],
  ["f8_e4m3", "F8_E4M3", 1],
  ["f8_e5m2", "F8_E5M2", 1],
  ["f8_e4m3fnuz", "F8_E4M3FNUZ", 1],
  ["f8_e5m2fnuz", "F8_E5M2FNUZ", 1],
  ["f8_e8m0", "F8_E8M0", 1],
];

const ARRAY_NAME: Record<DType, string> = {
  f64: "Float64Array",
  f32: "Float32Array",
  f16: "Float16Array",
  bf16: "Uint16Array",
  i64: "BigInt64Array",
  i32: "Int32Array",
  i16: "Int16Array",
  i8: "Int8Array",
  u64: "BigUint64Array",
  u32: "Uint32Array",
  u16: "Uint16Array",
  u8: "Uint8Array",
  bool: "Uint8Array",
  f8_e4m3: "Uint8Array",
  f8_e5m2: "Uint8Array",
  f8_e4m3fnuz: "Uint8Array",
  f8_e5m2fnuz: "Uint8Array",
  f8_e8m0: "Uint8Array",
};

function itemSize(dtype: DType): number {
  return DTYPES.find(([d]) => d === dtype)![2];
}

/** Bytes 0, 1, 2, … offset by `seed`, so every tensor's data is distinct. */
function pattern(length: number, seed: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 7 + seed * 31) & 0xff);
}

function entry(
  name: string,
  dtype: DType,
  shape: number[],
  seed = 1,
): TensorEntry & { data: Uint8Array } {
  const byteLength = shape.reduce((a, b) => a * b, 1) * itemSize(dtype);
  const data = dtype === "bool"
    ? Uint8Array.from({ length: byteLength }, (_, i) => (i + seed) & 1)
    : pattern(byteLength, seed);
  return { name, dtype, shape, byteLength, bytes: () => data, data };
}

const encoder = new TextEncoder();

/** A file from raw parts: the 8-byte length (default: the header's), header, data. */
function rawFile(
  header: string | Uint8Array,
  data: Uint8Array | number = 0,
  headerLength?: bigint,
): Uint8Array {
  const h = typeof header === "string" ? encoder.encode(header) : header;
  const d = typeof data === "number" ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + h.byteLength + d.byteLength);
  new DataView(out.buffer).setBigUint64(
    0,
    headerLength ?? BigInt(h.byteLength),
    true,
  );
  out.set(h, 8);
  out.set(d, 8 + h.byteLength);
  return out;
}

/** A header entry's JSON text. */
function info(dtype: string, shape: string, offsets: string): string {
  return `{"dtype":"${dtype}","shape":${shape},"data_offsets":${offsets}}`;
}

/**
 * Writes `bytes` and asserts that opening them fails with `kind` and the
 * message `<path>: <message>`.
 */
async function assertRejects(
  bytes: Uint8Array,
  kind: SafetensorsErrorKind,
  message: string,
): Promise<void> {
  await withDir(async (dir) => {
    const path = `${dir}/bad.safetensors`;
    await Deno.writeFile(path, bytes);
    const error = await SafetensorsFile.open(path).then(
      () => assert.fail(`expected ${kind}: ${message}`),
      (e: unknown) => e,
    );
    assert.ok(error instanceof SafetensorsError, String(error));
    assert.equal(error.message, `${path}: ${message}`);
    assert.equal(error.kind, kind);
    assert.equal(error.file, path);
  });
}

// ---------------------------------------------------------------- round trips

Deno.test("writeSafetensors() and read() round-trip every dtype", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/all.safetensors`;
    const entries = DTYPES.map(([d], i) => entry(`t.${d}`, d, [2, 3], i));
    await writeSafetensors(path, entries);
    using file = await SafetensorsFile.open(path);
    assert.deepEqual(
      file.tensors.map((t) => t.name),
      entries.map((e) => e.name),
    );
    for (const [dtype, fileName] of DTYPES) {
      const e = entries.find((x) => x.dtype === dtype)!;
      const t = await file.read(e.name);
      assert.equal(t.dtype, dtype);
      assert.deepEqual(t.shape, [2, 3]);
      assert.equal(t.data.constructor.name, ARRAY_NAME[dtype]);
      assert.deepEqual(t.bytes(), e.data);
      assert.deepEqual(await file.readBytes(e.name), e.data);
      assert.equal(file.get(e.name)?.safetensorsDtype, fileName);
      assert.equal(file.get(e.name)?.byteLength, 6 * itemSize(dtype));
    }
  });
});

Deno.test("read() keeps float values exactly (f32, f16, bf16 bits, f64)", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/floats.safetensors`;
    const f32 = new Float32Array([1.5, -0, Infinity, NaN, 1e-45]);
    const f16 = new Float16Array([0.5, -65504, 6e-8]);
    const bf16 = new Uint16Array([0x3f80, 0x7fc0, 0x8001]);
    const f64 = new Float64Array([Math.PI, -Number.MIN_VALUE]);
    const view = (a: ArrayBufferView) =>
      new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    await writeSafetensors(path, [
      {
        name: "a",
        dtype: "f32",
        shape: [5],
        byteLength: 20,
        bytes: () => view(f32),
      },
      {
        name: "b",
        dtype: "f16",
        shape: [3],
        byteLength: 6,
        bytes: () => view(f16),
      },
      {
        name: "c",
        dtype: "bf16",
        shape: [3],
        byteLength: 6,
        bytes: () => view(bf16),
      },
      {
        name: "d",
        dtype: "f64",
        shape: [2],
        byteLength: 16,
        bytes: () => view(f64),
      },
    ]);
    using file = await SafetensorsFile.open(path);
    assert.deepEqual([...(await file.read("a")).data], [...f32]);
    assert.ok(Object.is((await file.read("a")).data[1], -0));
    assert.deepEqual([...(await file.read("b")).data], [...f16]);
    assert.deepEqual([...(await file.read("c")).data], [...bf16]);
    assert.deepEqual([...(await file.read("d")).data], [...f64]);
  });
});

Deno.test("empty and 0-rank tensors round-trip between others", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/edge.safetensors`;
    const entries = [
      entry("scalar", "f32", [], 1),
      entry("empty", "f32", [0], 2),
      entry("wide_empty", "bf16", [3, 0, 5], 3),
      entry("vector", "i16", [3], 4),
      entry("scalar_i64", "i64", [], 5),
      entry("empty_last", "u8", [0, 0], 6),
    ];
    await writeSafetensors(path, entries);
    using file = await SafetensorsFile.open(path);
    for (const e of entries) {
      const t = await file.read(e.name);
      assert.deepEqual(t.shape, e.shape);
      assert.equal(t.size, e.shape.reduce((a, b) => a * b, 1));
      assert.deepEqual(t.bytes(), e.data);
    }
    assert.deepEqual(
      file.tensors.map((
        t,
      ) => [t.name, t.byteOffset - file.headerSize, t.byteLength]),
      [
        ["scalar", 0, 4],
        ["empty", 4, 0],
        ["wide_empty", 4, 0],
        ["vector", 4, 6],
        ["scalar_i64", 10, 8],
        ["empty_last", 18, 0],
      ],
    );
  });
});

Deno.test("a file with no tensors round-trips", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/none.safetensors`;
    await writeSafetensors(path, []);
    using file = await SafetensorsFile.open(path);
    assert.deepEqual(file.tensors, []);
    assert.deepEqual(file.metadata, { format: "pt" });
    assert.equal((await Deno.stat(path)).size, file.headerSize);
  });
});

Deno.test("metadata round-trips, with format pt added unless given", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/meta.safetensors`;
    const metadata = {
      "quantization": '{"method":"w8a16","layers":["a","b"]}',
      "ünïcode ✓": 'line\nbreak "quoted"',
      "0": "integer-like key",
      ["__proto__"]: "own key, not a prototype",
      "": "",
    };
    await writeSafetensors(path, [entry("x", "u8", [1])], metadata);
    using file = await SafetensorsFile.open(path);
    assert.deepEqual(file.metadata, { format: "pt", ...metadata });
    assert.equal(Object.hasOwn(file.metadata!, "__proto__"), true);
    assert.equal(Object.getPrototypeOf(file.metadata), Object.prototype);

    const tf = `${dir}/tf.safetensors`;
    await writeSafetensors(tf, [], { format: "tf" });
    using other = await SafetensorsFile.open(tf);
    assert.deepEqual(other.metadata, { format: "tf" });
  });
});

Deno.test("the writer keeps the given tensor order, integer-like names included", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/order.safetensors`;
    const names = ["z", "10", "a", "2", "__proto__", "m"];
    await writeSafetensors(path, names.map((n, i) => entry(n, "f32", [1], i)));
    using file = await SafetensorsFile.open(path);
    assert.deepEqual(file.tensors.map((t) => t.name), names);
    const json = new TextDecoder().decode(
      (await Deno.readFile(path)).subarray(8, file.headerSize),
    );
    const order = names.map((n) => json.indexOf(`"${n}":{`));
    assert.deepEqual(order, [...order].sort((a, b) => a - b));
  });
});

Deno.test("the writer lays out header, padding and offsets byte for byte", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/golden.safetensors`;
    const a = new Float32Array([1, -2]);
    await writeSafetensors(path, [
      {
        name: "a",
        dtype: "f32",
        shape: [2],
        byteLength: 8,
        bytes: () => new Uint8Array(a.buffer),
      },
      {
        name: "b",
        dtype: "i8",
        shape: [3],
        byteLength: 3,
        bytes: () => new Uint8Array([1, 0xfe, 3]),
      },
    ], { k: "v" });
    const json = '{"__metadata__":{"format":"pt","k":"v"},' +
      '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' +
      '"b":{"dtype":"I8","shape":[3],"data_offsets":[8,11]}}';
    assert.equal(json.length, 146);
    const n = Uint8Array.of(152, 0, 0, 0, 0, 0, 0, 0); // 146 rounded up to 8
    const padding = encoder.encode(" ".repeat(6));
    const data = Uint8Array.of(0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 1, 0xfe, 3);
    const expected = [...n, ...encoder.encode(json), ...padding, ...data];
    assert.deepEqual([...await Deno.readFile(path)], expected);
    using file = await SafetensorsFile.open(path);
    assert.equal(file.headerSize, 160);
    assert.deepEqual(file.get("b"), {
      name: "b",
      dtype: "i8",
      safetensorsDtype: "I8",
      shape: [3],
      byteOffset: 168,
      byteLength: 3,
    });
  });
});

Deno.test("the reader takes the reference writer's layout (no metadata, 8-aligned data)", async () => {
  // The layout huggingface/safetensors writes for {"attn0": f32 [1, 1, 2, 3]}.
  const json =
    '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}';
  const header = json + " ".repeat(72 - json.length);
  const data = new Uint8Array(new Float32Array([0, 1, 2, 3, 4, 5]).buffer);
  await withDir(async (dir) => {
    const path = `${dir}/ref.safetensors`;
    await Deno.writeFile(path, rawFile(header, data));
    using file = await SafetensorsFile.open(path);
    assert.equal(file.metadata, null);
    assert.equal(file.headerSize, 80);
    const t = await file.read("attn0");
    assert.deepEqual(t.shape, [1, 1, 2, 3]);
    assert.deepEqual([...t.data], [0, 1, 2, 3, 4, 5]);
  });
});

Deno.test("read() gives aligned typed arrays even when file data is unaligned", async () => {
  // N = 109 puts the f64 data at file offset 118; read() must still view it.
  const json = `{"b":${info("U8", "[1]", "[0,1]")},"d":${
    info("F64", "[2]", "[1,17]")
  }}`;
  const header = json.padEnd(109, " ");
  const f64 = new Float64Array([Math.E, -1 / 3]);
  const data = new Uint8Array(17);
  data[0] = 9;
  data.set(new Uint8Array(f64.buffer), 1);
  await withDir(async (dir) => {
    const path = `${dir}/unaligned.safetensors`;
    await Deno.writeFile(path, rawFile(header, data));
    using file = await SafetensorsFile.open(path);
    assert.equal(file.get("d")!.byteOffset, 118);
    const t = await file.read("d");
    assert.deepEqual([...t.data], [Math.E, -1 / 3]);
    assert.equal(t.data.byteOffset, 0);
    assert.equal(t.data.buffer.byteLength, 16);
  });
});

Deno.test("the reader lists tensors in data-offset order whatever the header order", async () => {
  const header = `{"second":${info("I16", "[2]", "[2,6]")},` +
    `"__metadata__":{"a":"b"},"first":${info("U8", "[2]", "[0,2]")}}`;
  await withDir(async (dir) => {
    const path = `${dir}/unordered.safetensors`;
    await Deno.writeFile(
      path,
      rawFile(header, Uint8Array.of(1, 2, 3, 0, 4, 0)),
    );
    using file = await SafetensorsFile.open(path);
    assert.deepEqual(file.tensors.map((t) => t.name), ["first", "second"]);
    assert.deepEqual([...(await file.read("second")).data], [3, 4]);
    assert.deepEqual(file.metadata, { a: "b" });
  });
});

Deno.test("the reader accepts what the reference accepts: whitespace, null metadata, extra fields", async () => {
  const cases = [
    `\t\n {"a":${info("U8", "[1]", "[0,1]")}} \r\n\t`,
    `{"__metadata__":null,"a":${info("U8", "[1]", "[0,1]")}}`,
    `{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"note":[{"x":1}]}}`,
    `{ "a" : { "shape" : [ 1 ] , "data_offsets" : [ 0 , 1 ] , "dtype" : "U8" } }`,
  ];
  for (const header of cases) {
    await withDir(async (dir) => {
      const path = `${dir}/ok.safetensors`;
      await Deno.writeFile(path, rawFile(header, Uint8Array.of(42)));
      using file = await SafetensorsFile.open(path);
      assert.deepEqual([...await file.readBytes("a")], [42], header);
      assert.equal(file.metadata, null);
    });
  }
});

Deno.test("concurrent reads of one file each get their own tensor", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/many.safetensors`;
    const entries = Array.from(
      { length: 24 },
      (_, i) => entry(`t${i}`, "f32", [i + 1, 257], i),
    );
    await writeSafetensors(path, entries);
    using file = await SafetensorsFile.open(path);
    const reads = await Promise.all(entries.map((e) => file.readBytes(e.name)));
    reads.forEach((bytes, i) => assert.deepEqual(bytes, entries[i]!.data));
  });
});

Deno.test("lazy() gives dtype and shape at once and the data on load()", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/lazy.safetensors`;
    const e = entry("w", "bf16", [4, 2]);
    await writeSafetensors(path, [e]);
    const file = await SafetensorsFile.open(path);
    const lazy = file.lazy("w");
    assert.equal(lazy.dtype, "bf16");
    assert.deepEqual(lazy.shape, [4, 2]);
    assert.deepEqual((await lazy.load()).bytes(), e.data);
    file.close();
    await assert.rejects(lazy.load(), {
      name: "SafetensorsError",
      kind: "Io",
      message: `${path}: file is closed`,
    });
  });
});

Deno.test("reading a missing tensor names it (TensorNotFound)", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/x.safetensors`;
    await writeSafetensors(path, [entry("present", "u8", [1])]);
    using file = await SafetensorsFile.open(path);
    const expected = {
      kind: "TensorNotFound",
      message: `${path}: no tensor named "absent"`,
    };
    await assert.rejects(file.read("absent"), expected);
    await assert.rejects(file.readBytes("absent"), expected);
    assert.throws(() => file.lazy("absent"), expected);
    assert.equal(file.get("absent"), undefined);
  });
});

Deno.test("open() reads only the header of a large file", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/big.safetensors`;
    const gib = 2 ** 30;
    const header = `{"big":${info("U8", `[${gib}]`, `[0,${gib}]`)}}`;
    await Deno.writeFile(path, rawFile(header));
    await Deno.truncate(path, 8 + header.length + gib); // sparse: no disk used
    const before = Deno.memoryUsage().external;
    const started = performance.now();
    using file = await SafetensorsFile.open(path);
    assert.ok(performance.now() - started < 1000);
    assert.ok(Deno.memoryUsage().external - before < 16 * 2 ** 20);
    assert.equal(file.get("big")?.byteLength, gib);
  });
});

Deno.test("a file that shrinks after open() fails the read with Io", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/shrink.safetensors`;
    await writeSafetensors(path, [
      entry("a", "u8", [4]),
      entry("b", "u8", [4]),
    ]);
    using file = await SafetensorsFile.open(path);
    await Deno.truncate(path, file.headerSize + 6);
    await assert.rejects(file.read("b"), {
      kind: "Io",
      message:
        `${path}: tensor "b": file ended at byte ${file.headerSize + 6}, ` +
        `before the 4 bytes at ${
          file.headerSize + 4
        } (changed since it was opened?)`,
    });
  });
});

Deno.test("open() reports missing paths and directories as Io", async () => {
  await withDir(async (dir) => {
    await assert.rejects(SafetensorsFile.open(`${dir}/none.safetensors`), {
      kind: "Io",
      message:
        `${dir}/none.safetensors: cannot open: No such file or directory (os error 2)`,
    });
    await assert.rejects(SafetensorsFile.open(dir), {
      kind: "Io",
      message: `${dir}: is not a regular file`,
    });
  });
});

Deno.test("safetensorsDtypeName() and parseSafetensorsDtype() map every dtype both ways", () => {
  for (const [dtype, name] of DTYPES) {
    assert.equal(safetensorsDtypeName(dtype), name);
    assert.equal(parseSafetensorsDtype(name), dtype);
  }
  for (const name of ["F6_E2M3", "F4", "C64", "f32", "toString", ""]) {
    assert.equal(parseSafetensorsDtype(name), undefined);
  }
  assert.throws(() => safetensorsDtypeName("f128" as DType), TypeError);
});

// ------------------------------------------------------------------ writer errors

Deno.test("writeSafetensors() refuses bad entries before creating the file", async () => {
  const cases: [TensorEntry[], SafetensorsErrorKind, string][] = [
    [
      [{ ...entry("a", "f32", [2, 2]), byteLength: 12 }],
      "TensorInvalidInfo",
      'tensor "a": byteLength 12 but dtype F32 × shape [2, 2] needs 16',
    ],
    [
      [entry("a", "u8", [1]), entry("a", "u8", [1])],
      "DuplicateTensor",
      'tensor "a": name given twice',
    ],
    [
      [entry("__metadata__", "u8", [1])],
      "TensorInvalidInfo",
      'tensor "__metadata__": the name __metadata__ is reserved',
    ],
    [
      [{ ...entry("a", "u8", [1]), shape: [-1] }],
      "InvalidShape",
      'tensor "a": shape [-1] has the invalid dimension -1',
    ],
    [
      [{ ...entry("a", "u8", [1]), shape: [1.5] }],
      "InvalidShape",
      'tensor "a": shape [1.5] has the invalid dimension 1.5',
    ],
    [
      [{ ...entry("a", "u8", [1]), dtype: "f128" as DType }],
      "InvalidDtype",
      'tensor "a": unknown dtype "f128"',
    ],
    [
      [{ ...entry("a", "f64", [1]), shape: [2 ** 30, 2 ** 30] }],
      "ValidationOverflow",
      'tensor "a": shape [1073741824, 1073741824] is more than 2^53 - 1 bytes',
    ],
  ];
  for (const [entries, kind, message] of cases) {
    await withDir(async (dir) => {
      const path = `${dir}/out.safetensors`;
      await assert.rejects(writeSafetensors(path, entries), {
        name: "SafetensorsError",
        kind,
        message: `${path}: ${message}`,
      });
      await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
    });
  }
  await withDir(async (dir) => {
    const path = `${dir}/out.safetensors`;
    await assert.rejects(
      writeSafetensors(path, [], { n: 5 as unknown as string }),
      {
        kind: "InvalidMetadata",
        message:
          `${path}: __metadata__ value of "n" must be a string, got number`,
      },
    );
  });
});

Deno.test("writeSafetensors() checks each produced chunk against its declared size", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/out.safetensors`;
    const short = {
      ...entry("w", "f32", [4]),
      bytes: () => new Uint8Array(15),
    };
    await assert.rejects(
      writeSafetensors(path, [entry("a", "u8", [1]), short]),
      {
        kind: "TensorInvalidInfo",
        message:
          `${path}: tensor "w": bytes() produced 15 bytes, but the header declares 16`,
      },
    );
    const wrongType = {
      ...entry("w", "f32", [4]),
      bytes: () => new Float32Array(4) as unknown as Uint8Array,
    };
    await assert.rejects(writeSafetensors(path, [wrongType]), {
      kind: "TensorInvalidInfo",
      message:
        `${path}: tensor "w": bytes() produced a Float32Array, but the header declares 16`,
    });
  });
});

Deno.test("writeSafetensors() produces entries one at a time, in order", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/stream.safetensors`;
    const events: string[] = [];
    const entries = ["a", "b", "c"].map((name, i) => ({
      ...entry(name, "u8", [2], i),
      bytes: async () => {
        events.push(`start ${name}`);
        await new Promise((r) => setTimeout(r, 1));
        events.push(`end ${name}`);
        return pattern(2, i);
      },
    }));
    await writeSafetensors(path, entries);
    assert.deepEqual(events, [
      "start a",
      "end a",
      "start b",
      "end b",
      "start c",
      "end c",
    ]);
  });
});

Deno.test("writeSafetensors() propagates an error thrown by bytes() unchanged", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/out.safetensors`;
    const boom = new Error("NaN in weight");
    const bad = { ...entry("w", "u8", [1]), bytes: () => Promise.reject(boom) };
    await assert.rejects(writeSafetensors(path, [bad]), (e) => e === boom);
  });
});

Deno.test("writeSafetensors() reports an unwritable path as Io", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/missing/out.safetensors`;
    await assert.rejects(writeSafetensors(path, []), {
      kind: "Io",
      message: `${path}: cannot create: No such file or directory (os error 2)`,
    });
  });
});

// --------------------------------------------------------------- hostile files

const U8 = (offsets: string, shape = "[1]") => info("U8", shape, offsets);

/** [title, file bytes, kind, message after "<path>: "] */
const HOSTILE: [string, Uint8Array, SafetensorsErrorKind, string][] = [
  // Length prefix
  [
    "an empty file",
    new Uint8Array(0),
    "HeaderTooSmall",
    "file is 0 bytes, too short for the 8-byte header length",
  ],
  [
    "a file shorter than 8 bytes",
    new Uint8Array(7),
    "HeaderTooSmall",
    "file is 7 bytes, too short for the 8-byte header length",
  ],
  [
    "a header length past the end of the file",
    rawFile("{}", 0, 100n),
    "InvalidHeaderLength",
    "header length 100 runs past the end of the file (10 bytes)",
  ],
  [
    "a header length one byte past the end",
    rawFile(`{"a":${U8("[0,1]")}}`, 1, 55n),
    "InvalidHeaderLength",
    "header length 55 runs past the end of the file (62 bytes)",
  ],
  [
    "a header length over 100 MB",
    rawFile("{}", 0, 100_000_001n),
    "HeaderTooLarge",
    "header length 100000001 is over the limit of 100000000 bytes",
  ],
  [
    "a header length of 2^40",
    rawFile("{}", 0, 2n ** 40n),
    "HeaderTooLarge",
    "header length 1099511627776 is over the limit of 100000000 bytes",
  ],
  [
    "a header length of 2^64 - 1",
    rawFile("{}", 0, 2n ** 64n - 1n),
    "HeaderTooLarge",
    "header length 18446744073709551615 is over the limit of 100000000 bytes",
  ],
  // Header text
  [
    "a header that is not UTF-8",
    rawFile(Uint8Array.of(0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d)),
    "InvalidHeader",
    "header is not valid UTF-8",
  ],
  [
    "a header with a truncated UTF-8 sequence",
    rawFile(Uint8Array.of(0x7b, 0x7d, 0xe2, 0x9c)),
    "InvalidHeader",
    "header is not valid UTF-8",
  ],
  [
    "a header with a UTF-8 byte order mark",
    rawFile("\ufeff{}"),
    "InvalidHeader",
    "header is not a JSON object (it starts with U+FEFF)",
  ],
  ["an empty header", rawFile(""), "InvalidHeader", "header is empty"],
  [
    "a header of spaces",
    rawFile("        "),
    "InvalidHeader",
    "header is empty",
  ],
  [
    "a header that is a JSON array",
    rawFile("[1, 2]"),
    "InvalidHeader",
    'header is not a JSON object (it starts with "[")',
  ],
  [
    "a header that is a JSON string",
    rawFile('"{}"'),
    "InvalidHeader",
    'header is not a JSON object (it starts with "\\"")',
  ],
  [
    "a header padded with NUL bytes in front",
    rawFile("\0{}"),
    "InvalidHeader",
    "header is not a JSON object (it starts with U+0000)",
  ],
  [
    "a header that is not JSON (cut short)",
    rawFile('{"a":'),
    "InvalidHeaderDeserialization",
    "header is not valid JSON: Unexpected end of JSON input",
  ],
  [
    "a header with a trailing comma",
    rawFile('{"a":1,}'),
    "InvalidHeaderDeserialization",
    "header is not valid JSON: Expected double-quoted property name in JSON at position 7 (line 1 column 8)",
  ],
  [
    "a header with text after the object",
    rawFile("{} {}"),
    "InvalidHeaderDeserialization",
    "header is not valid JSON: Unexpected non-whitespace character after JSON at position 3 (line 1 column 4)",
  ],
  [
    "a header padded with NUL bytes",
    rawFile("{}\0\0\0\0\0\0"),
    "InvalidHeaderDeserialization",
    "header is not valid JSON: Unexpected non-whitespace character after JSON at position 2 (line 1 column 3)",
  ],
  [
    "a header nested 10000 arrays deep",
    rawFile(`{"a":${"[".repeat(10000)}${"]".repeat(10000)}}`),
    "InvalidHeaderDeserialization",
    "header is not valid JSON: it nests too deeply",
  ],
  // Entries
  [
    "an entry that is not an object",
    rawFile('{"a":5}'),
    "TensorInvalidInfo",
    'tensor "a": entry is 5, not an object with dtype, shape and data_offsets',
  ],
  [
    "an entry that is an array",
    rawFile('{"a":["U8",[1],[0,1]]}', 1),
    "TensorInvalidInfo",
    'tensor "a": entry is an array of 3 items, not an object with dtype, shape and data_offsets',
  ],
  [
    "an entry without dtype",
    rawFile('{"a":{"shape":[1],"data_offsets":[0,1]}}', 1),
    "InvalidDtype",
    'tensor "a": entry has no "dtype"',
  ],
  [
    "an entry without shape",
    rawFile('{"a":{"dtype":"U8","data_offsets":[0,1]}}', 1),
    "InvalidShape",
    'tensor "a": entry has no "shape"',
  ],
  [
    "an entry without data_offsets",
    rawFile('{"a":{"dtype":"U8","shape":[1]}}', 1),
    "InvalidOffset",
    'tensor "a": entry has no "data_offsets"',
  ],
  // Dtypes
  [
    "an unknown dtype",
    rawFile(`{"a":${info("F33", "[1]", "[0,4]")}}`, 4),
    "InvalidDtype",
    'tensor "a": unknown dtype "F33"',
  ],
  [
    "a lower-case dtype",
    rawFile(`{"a":${info("f32", "[1]", "[0,4]")}}`, 4),
    "InvalidDtype",
    'tensor "a": unknown dtype "f32"',
  ],
  [
    "a dtype TinyQ does not support",
    rawFile(`{"a":${info("C64", "[1]", "[0,8]")}}`, 8),
    "InvalidDtype",
    'tensor "a": dtype C64 is not supported by TinyQ',
  ],
  [
    "a sub-byte dtype",
    rawFile(`{"a":${info("F4", "[2]", "[0,1]")}}`, 1),
    "InvalidDtype",
    'tensor "a": dtype F4 is not supported by TinyQ',
  ],
  [
    "a dtype that is not a string",
    rawFile('{"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}', 4),
    "InvalidDtype",
    'tensor "a": dtype must be a string, got 4',
  ],
  // Shapes
  [
    "a negative dimension",
    rawFile(`{"a":${U8("[0,1]", "[-1,2]")}}`, 1),
    "InvalidShape",
    'tensor "a": shape [-1, 2] has the invalid dimension -1 (dimensions are non-negative integers)',
  ],
  [
    "a fractional dimension",
    rawFile(`{"a":${U8("[0,1]", "[1.5]")}}`, 1),
    "InvalidShape",
    'tensor "a": shape [1.5] has the invalid dimension 1.5 (dimensions are non-negative integers)',
  ],
  [
    "an integer written as a float",
    rawFile(`{"a":${U8("[0,2]", "[2.0]")}}`, 2),
    "InvalidShape",
    'tensor "a": shape [2.0] has the invalid dimension 2.0 (dimensions are non-negative integers)',
  ],
  [
    "an integer in exponent form",
    rawFile(`{"a":${U8("[0,100]", "[1e2]")}}`, 100),
    "InvalidShape",
    'tensor "a": shape [1e2] has the invalid dimension 1e2 (dimensions are non-negative integers)',
  ],
  [
    "a dimension that is a string",
    rawFile(`{"a":${U8("[0,2]", '["2"]')}}`, 2),
    "InvalidShape",
    'tensor "a": shape ["2"] has the invalid dimension "2" (dimensions are non-negative integers)',
  ],
  [
    "a dimension that is null",
    rawFile(`{"a":${U8("[0,2]", "[null]")}}`, 2),
    "InvalidShape",
    'tensor "a": shape [null] has the invalid dimension null (dimensions are non-negative integers)',
  ],
  [
    "a shape that is not an array",
    rawFile(`{"a":${U8("[0,2]", "2")}}`, 2),
    "InvalidShape",
    'tensor "a": shape must be an array of non-negative integers, got 2',
  ],
  [
    "a dimension over 2^64",
    rawFile(`{"a":${info("I32", "[2,18446744073709551614]", "[0,16]")}}`, 16),
    "ValidationOverflow",
    'tensor "a": shape [2, 18446744073709551614] has a dimension over 2^53 - 1',
  ],
  [
    "a dimension of 2^53",
    rawFile(`{"a":${U8("[0,1]", "[9007199254740992]")}}`, 1),
    "ValidationOverflow",
    'tensor "a": shape [9007199254740992] has a dimension over 2^53 - 1',
  ],
  [
    "a shape of 2^30 × 2^30 elements",
    rawFile(`{"a":${info("F32", "[1073741824,1073741824]", "[0,16]")}}`, 16),
    "ValidationOverflow",
    'tensor "a": shape [1073741824, 1073741824] has more than 2^53 - 1 elements',
  ],
  [
    "a shape whose byte size overflows",
    rawFile(`{"a":${info("F32", "[67108864,67108864]", "[0,16]")}}`, 16),
    "ValidationOverflow",
    'tensor "a": dtype F32 × shape [67108864, 67108864] is more than 2^53 - 1 bytes',
  ],
  // Offsets
  [
    "reversed offsets",
    rawFile(`{"a":${U8("[1,0]", "[0]")}}`, 1),
    "InvalidOffset",
    'tensor "a": data_offsets [1, 0] end before they begin',
  ],
  [
    "offsets that are not a pair",
    rawFile(`{"a":${U8("[0]")}}`, 1),
    "InvalidOffset",
    'tensor "a": data_offsets must be [begin, end] with non-negative integers, got [0]',
  ],
  [
    "offsets that are an object",
    rawFile(`{"a":${U8('{"begin":0}')}}`, 1),
    "InvalidOffset",
    'tensor "a": data_offsets must be [begin, end] with non-negative integers, got an object',
  ],
  [
    "negative offsets",
    rawFile(`{"a":${U8("[-1,0]")}}`, 1),
    "InvalidOffset",
    'tensor "a": data_offsets [-1, 0] must be non-negative integers',
  ],
  [
    "fractional offsets",
    rawFile(`{"a":${U8("[0,1.5]")}}`, 1),
    "InvalidOffset",
    'tensor "a": data_offsets [0, 1.5] must be non-negative integers',
  ],
  [
    "offsets over 2^53",
    rawFile(`{"a":${U8("[0,18446744073709551616]")}}`, 1),
    "ValidationOverflow",
    'tensor "a": data_offsets [0, 18446744073709551616] are over 2^53 - 1',
  ],
  [
    "offsets spanning fewer bytes than dtype × shape",
    rawFile(`{"a.weight":${info("F32", "[2,2]", "[0,12]")}}`, 12),
    "TensorInvalidInfo",
    'tensor "a.weight": data_offsets [0, 12] span 12 bytes but dtype F32 × shape [2, 2] needs 16',
  ],
  [
    "offsets spanning more bytes than dtype × shape",
    rawFile(`{"a":${info("BF16", "[3]", "[0,8]")}}`, 8),
    "TensorInvalidInfo",
    'tensor "a": data_offsets [0, 8] span 8 bytes but dtype BF16 × shape [3] needs 6',
  ],
  [
    "a hole before the first tensor",
    rawFile(`{"a":${U8("[4,5]")}}`, 5),
    "InvalidOffset",
    'tensor "a": data_offsets [4, 5] leave 4 bytes unused at the start of the data buffer',
  ],
  [
    "a hole between tensors",
    rawFile(`{"a":${U8("[0,1]")},"b":${U8("[3,4]")}}`, 4),
    "InvalidOffset",
    'tensor "b": data_offsets [3, 4] leave 2 bytes unused after tensor "a", which ends at 1',
  ],
  [
    "overlapping tensors",
    rawFile(`{"a":${U8("[0,2]", "[2]")},"b":${U8("[1,3]", "[2]")}}`, 3),
    "InvalidOffset",
    'tensor "b": data_offsets [1, 3] overlap tensor "a", which ends at 2',
  ],
  [
    "two tensors at the same offsets",
    rawFile(`{"a":${U8("[0,1]")},"b":${U8("[0,1]")}}`, 1),
    "InvalidOffset",
    'tensor "b": data_offsets [0, 1] overlap tensor "a", which ends at 1',
  ],
  [
    "offsets past the end of the file",
    rawFile(`{"a":${U8("[0,1]")},"b":${U8("[1,2]")}}`, 1),
    "MetadataIncompleteBuffer",
    'tensor "b": data_offsets [1, 2] run past the end of the file (the data buffer holds 1 byte)',
  ],
  [
    "a claimed 1 TiB tensor in a small file",
    rawFile(`{"a":${U8("[0,1099511627776]", "[1099511627776]")}}`, 8),
    "MetadataIncompleteBuffer",
    'tensor "a": data_offsets [0, 1099511627776] run past the end of the file (the data buffer holds 8 bytes)',
  ],
  [
    "trailing bytes after the last tensor",
    rawFile(`{"a":${U8("[0,1]")}}`, 3),
    "MetadataIncompleteBuffer",
    "2 trailing bytes after the last tensor (tensor data ends at byte 62 of 64)",
  ],
  [
    "data bytes in a file without tensors",
    rawFile("{}", 5),
    "MetadataIncompleteBuffer",
    "5 trailing bytes after the last tensor (tensor data ends at byte 10 of 15)",
  ],
  // Duplicates
  [
    "a duplicate tensor name",
    rawFile(`{"a":${U8("[0,1]")},"a":${U8("[1,2]")}}`, 2),
    "DuplicateTensor",
    'tensor "a": name appears twice in the header',
  ],
  [
    "a duplicate name spelled with an escape",
    rawFile(`{"ab":${U8("[0,1]")},"\\u0061b":${U8("[1,2]")}}`, 2),
    "DuplicateTensor",
    'tensor "ab": name appears twice in the header',
  ],
  [
    "a duplicate name after a quote-escaping name",
    rawFile(
      `{"x\\\\":${U8("[0,1]")},"y\\"":${U8("[1,2]")},"x\\\\":${U8("[2,3]")}}`,
      3,
    ),
    "DuplicateTensor",
    'tensor "x\\\\": name appears twice in the header',
  ],
  [
    "a duplicate key inside an entry",
    rawFile(
      `{"a":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,4]}}`,
      4,
    ),
    "TensorInvalidInfo",
    'tensor "a": entry has the key "dtype" twice',
  ],
  [
    "__metadata__ twice",
    rawFile('{"__metadata__":{},"__metadata__":{}}'),
    "InvalidMetadata",
    "__metadata__ appears twice in the header",
  ],
  [
    "a duplicate key in __metadata__",
    rawFile('{"__metadata__":{"k":"1","k":"2"}}'),
    "InvalidMetadata",
    '__metadata__ has the key "k" twice',
  ],
  // __metadata__
  [
    "__metadata__ that is an array",
    rawFile('{"__metadata__":["format","pt"]}'),
    "InvalidMetadata",
    '__metadata__ must be an object of strings, got ["format", "pt"]',
  ],
  [
    "__metadata__ that is a string",
    rawFile('{"__metadata__":"pt"}'),
    "InvalidMetadata",
    '__metadata__ must be an object of strings, got "pt"',
  ],
  [
    "__metadata__ with a number value",
    rawFile('{"__metadata__":{"format":"pt","n":1}}'),
    "InvalidMetadata",
    '__metadata__ value of "n" must be a string, got 1',
  ],
  [
    "__metadata__ with a nested object",
    rawFile('{"__metadata__":{"q":{"bits":8}}}'),
    "InvalidMetadata",
    '__metadata__ value of "q" must be a string, got an object',
  ],
  [
    "__metadata__ with a null value",
    rawFile('{"__metadata__":{"q":null}}'),
    "InvalidMetadata",
    '__metadata__ value of "q" must be a string, got null',
  ],
];

for (const [title, bytes, kind, message] of HOSTILE) {
  Deno.test(`open() refuses ${title} (${kind})`, async () => {
    await assertRejects(bytes, kind, message);
  });
}

Deno.test("error messages stay one short line for hostile names", async () => {
  const name = "n\n".repeat(5000);
  const bytes = rawFile(
    `{${JSON.stringify(name)}:${info("F33", "[1]", "[0,1]")}}`,
    1,
  );
  await withDir(async (dir) => {
    const path = `${dir}/long.safetensors`;
    await Deno.writeFile(path, bytes);
    const e = await SafetensorsFile.open(path).catch((e) => e);
    assert.ok(e instanceof SafetensorsError);
    assert.equal(e.tensor, name);
    assert.ok(!e.message.includes("\n"));
    assert.ok(e.message.length < path.length + 200, e.message);
  });
});

Deno.test("readInto() fills the start of a reused buffer and refuses a short one", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/into.safetensors`;
    const entries = [
      entry("big", "f32", [3, 5], 1),
      entry("small", "i8", [2], 2),
      entry("none", "u8", [0]),
    ];
    await writeSafetensors(path, entries);
    using file = await SafetensorsFile.open(path);
    const scratch = new Uint8Array(64).fill(0xaa);
    const big = await file.readInto("big", scratch);
    assert.equal(big.buffer, scratch.buffer);
    assert.deepEqual(big, entries[0]!.data);
    const small = await file.readInto("small", scratch);
    assert.deepEqual(small, entries[1]!.data);
    assert.deepEqual(scratch.subarray(2, 60), entries[0]!.data.subarray(2, 60));
    assert.equal(scratch[60], 0xaa);
    assert.equal((await file.readInto("none", scratch)).byteLength, 0);
    await assert.rejects(file.readInto("big", new Uint8Array(59)), {
      name: "RangeError",
      message: 'readInto("big"): target holds 59 bytes, the tensor 60',
    });
  });
});
