// Golden values from the real libraries' own functions (compressed-tensors'
// pack_to_int32/unpack_from_int32, optimum-quanto's AbsmaxOptimizer and
// quantize_symmetric kernel), run under PyTorch by
// tools/make_export_fixtures.py from source checkouts (neither package
// installs here: PyPI is unreachable, Debian has neither, and quanto needs
// torch >= 2 to import).

import assert from "node:assert/strict";
import fixture from "./fixtures/export_formats.json" with { type: "json" };
import { compressedTensorsFormat } from "../src/io/formats/compressed_tensors.ts";
import {
  packInt8Rows,
  unpackInt8Rows,
} from "../src/io/formats/compressed_tensors_packing.ts";
import { quantoFormat } from "../src/io/formats/quanto.ts";
import { quantizeRowsInt8 } from "../src/quant/quantize_rows.ts";
import { f32ToFloatArray } from "../src/dtype.ts";

Deno.test("packInt8Rows() gives the words compressed-tensors' pack_to_int32 gives, padding included", () => {
  const [rows, cols] = fixture.pack.shape as [number, number];
  const q = Int8Array.from(fixture.pack.q);
  const words = packInt8Rows(q, rows, cols);
  assert.deepEqual([...words], fixture.pack.words);
  assert.deepEqual(
    unpackInt8Rows(Int32Array.from(fixture.pack.words), rows, cols),
    q,
  );
  // And through the format, in blocks of rows as the writer feeds it.
  const bytes = [0, 2, 4].flatMap((r0) => {
    const n = Math.min(2, rows - r0);
    return [
      ...compressedTensorsFormat.encodeLinear({
        path: "fc",
        outFeatures: rows,
        inFeatures: cols,
        rowStart: r0,
        rows: n,
        q: q.slice(r0 * cols, (r0 + n) * cols),
        scales: new Float32Array(n).fill(1),
        sourceDtype: "bf16",
      })[0]!,
    ];
  });
  assert.deepEqual(
    bytes,
    [...new Uint8Array(Int32Array.from(fixture.pack.words).buffer)],
  );
});

Deno.test("quanto golden: f32 weights give quanto's qint8 data and scales exactly", () => {
  const c = fixture.quanto.find((x) => x.dtype === "f32")!;
  const [rows, cols] = c.shape as [number, number];
  const w = new Float32Array(Uint32Array.from(c.bits).buffer);
  const { q, scales } = quantizeRowsInt8(w, "f32", rows, cols);
  assert.deepEqual([...q], c.data);
  assert.deepEqual([...new Uint32Array(scales.buffer)], c.scale_bits);
  // The bytes the quanto format stores for them.
  const [data, scale] = quantoFormat.encodeLinear({
    path: "fc",
    outFeatures: rows,
    inFeatures: cols,
    rowStart: 0,
    rows,
    q,
    scales,
    sourceDtype: "f32",
  });
  assert.deepEqual([...new Int8Array(data!.slice().buffer)], c.data);
  assert.deepEqual([...new Uint32Array(scale!.slice().buffer)], c.scale_bits);
});

Deno.test("quanto golden: bf16 weights give quanto's bf16 scales; int8 values differ by at most 1 where quanto divides in bf16", () => {
  const c = fixture.quanto.find((x) => x.dtype === "bf16")!;
  const [rows, cols] = c.shape as [number, number];
  const { q, scales } = quantizeRowsInt8(
    Uint16Array.from(c.bits),
    "bf16",
    rows,
    cols,
  );
  const [, scale] = quantoFormat.encodeLinear({
    path: "fc",
    outFeatures: rows,
    inFeatures: cols,
    rowStart: 0,
    rows,
    q,
    scales,
    sourceDtype: "bf16",
  });
  assert.deepEqual([...new Uint16Array(scale!.slice().buffer)], c.scale_bits);
  assert.deepEqual(
    [...(f32ToFloatArray(scales, "bf16") as Uint16Array)],
    c.scale_bits,
  );
  // quanto computes w / scale in bf16 (rounding the quotient to 8 bits of
  // mantissa before rounding to an integer); TinyQ divides in f32 by the f32
  // scale. Both are valid `_data` for `_data * _scale`.
  const diffs = [...q].map((v, i) => v - c.data[i]!);
  assert.ok(diffs.every((d) => Math.abs(d) <= 1), `${diffs}`);
  const changed = diffs.filter((d) => d !== 0).length;
  assert.ok(changed > 0 && changed < q.length / 5, `${changed} differ`);
});
