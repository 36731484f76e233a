/**
 * compressed-tensors' packing of integer codes into I32 words: int8 weight
 * rows (`weight_packed` of `pack-quantized` int8) and 4-bit zero points
 * (`weight_zero_point`, packed along the output dimension). 4-bit weights
 * need no repacking: eight codes per word are byte for byte TinyQ's own
 * `int4_weights`.
 *
 * @module
 */

function checkRows(
  length: number,
  rows: number,
  cols: number,
  what: string,
): void {
  if (
    !Number.isSafeInteger(rows) || rows < 0 || !Number.isSafeInteger(cols) ||
    cols < 0
  ) {
    throw new RangeError(`Invalid shape [${rows}, ${cols}]`);
  }
  if (length !== rows * cols) {
    throw new RangeError(
      `${what} holds ${length} values, [${rows}, ${cols}] needs ${rows * cols}`,
    );
  }
}

/** dst[i] = src[i] ^ 0x80, four bytes at a time where both are aligned. */
function flipSignBits(src: Uint8Array, dst: Uint8Array): void {
  const n = src.length;
  const words = n >>> 2;
  if (src.byteOffset % 4 === 0 && dst.byteOffset % 4 === 0) {
    // Int32 views keep the XOR in V8's int32 fast path (a Uint32 result
    // above 2^31 would be boxed as a double).
    const s32 = new Int32Array(src.buffer, src.byteOffset, words);
    const d32 = new Int32Array(dst.buffer, dst.byteOffset, words);
    for (let i = 0; i < words; i++) d32[i] = s32[i]! ^ 0x80808080;
    for (let i = words * 4; i < n; i++) dst[i] = src[i]! ^ 0x80;
    return;
  }
  for (let i = 0; i < n; i++) dst[i] = src[i]! ^ 0x80;
}

/**
 * Copies `rows` rows of `cols` bytes from `src` to `dst` with each byte
 * XOR 0x80 (two's-complement q ⇄ unsigned q + 128); `srcStride` and
 * `dstStride` are the rows' lengths in bytes, longer than `cols` where a row
 * is padded to whole words.
 */
function flipRows(
  src: Uint8Array,
  srcStride: number,
  dst: Uint8Array,
  dstStride: number,
  rows: number,
  cols: number,
): void {
  if (srcStride === dstStride) {
    flipSignBits(src, dst);
    return;
  }
  for (let r = 0; r < rows; r++) {
    const s = r * srcStride;
    const d = r * dstStride;
    for (let c = 0; c < cols; c++) dst[d + c] = src[s + c]! ^ 0x80;
  }
}

/**
 * Packs int8 rows [rows, cols] into compressed-tensors' I32 words
 * [rows, ceil(cols / 4)]: element k of each group of four goes to bits
 * [8k, 8k + 8) as q + 128, and the last word of a row is padded with zero
 * bytes. The words' bytes (`new Uint8Array(words.buffer)`) are what the
 * safetensors file stores.
 *
 * @example The library's own docstring example: [1, 2] packs to 33409
 * ```ts
 * import { packInt8Rows } from "./compressed_tensors_packing.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...packInt8Rows(new Int8Array([1, 2]), 1, 2)], [33409]);
 * ```
 */
export function packInt8Rows(
  q: Int8Array,
  rows: number,
  cols: number,
): Int32Array {
  checkRows(q.length, rows, cols, "q");
  const wordsPerRow = Math.ceil(cols / 4);
  const out = new Int32Array(rows * wordsPerRow);
  const src = new Uint8Array(q.buffer, q.byteOffset, q.length);
  // Bits [8k, 8k + 8) of a word are its byte k on a little-endian host (every
  // platform Deno runs on, and safetensors' byte order), so packing is a byte
  // copy; XOR 0x80 turns a two's-complement byte q into the unsigned q + 128.
  flipRows(src, cols, new Uint8Array(out.buffer), wordsPerRow * 4, rows, cols);
  return out;
}

/**
 * Unpacks compressed-tensors' I32 words [rows, ceil(cols / 4)] back to int8
 * rows [rows, cols], dropping the padding.
 *
 * @example
 * ```ts
 * import { packInt8Rows, unpackInt8Rows } from "./compressed_tensors_packing.ts";
 * import assert from "node:assert/strict";
 * const q = new Int8Array([-128, 127, 0, 5, -7]);
 * assert.deepEqual(unpackInt8Rows(packInt8Rows(q, 1, 5), 1, 5), q);
 * ```
 */
export function unpackInt8Rows(
  words: Int32Array,
  rows: number,
  cols: number,
): Int8Array {
  const wordsPerRow = Math.ceil(cols / 4);
  checkRows(words.length, rows, wordsPerRow, "words");
  const src = new Uint8Array(words.buffer, words.byteOffset, words.byteLength);
  const out = new Int8Array(rows * cols);
  flipRows(src, wordsPerRow * 4, new Uint8Array(out.buffer), cols, rows, cols);
  return out;
}

/**
 * 4-bit zero points [out, groups] (0–15, TinyQ's offset codes, which are
 * compressed-tensors' signed zero points plus 8) packed along the output
 * dimension: element [r, g] in bits [4(r mod 8), 4(r mod 8) + 4) of word
 * [⌊r / 8⌋, g], the last word of a column padded with zeros.
 *
 * @example
 * ```ts
 * import { packZeroPoints, unpackZeroPoints } from "./compressed_tensors_packing.ts";
 * import assert from "node:assert/strict";
 * const zp = Uint8Array.from({ length: 9 * 2 }, (_, i) => i % 16);
 * const words = packZeroPoints(zp, 9, 2);
 * assert.deepEqual(words.length, 4); // [ceil(9 / 8), 2]
 * assert.equal(words[0]! & 0xf, zp[0]); // row 0, group 0
 * assert.equal((words[0]! >>> 4) & 0xf, zp[2]); // row 1, group 0
 * assert.deepEqual(unpackZeroPoints(words, 9, 2), zp);
 * ```
 */
export function packZeroPoints(
  zp: Uint8Array,
  rows: number,
  groups: number,
): Int32Array {
  checkRows(zp.length, rows, groups, "zero points");
  const words = new Int32Array(Math.ceil(rows / 8) * groups);
  for (let r = 0; r < rows; r++) {
    const shift = 4 * (r & 7);
    const w = (r >> 3) * groups;
    for (let g = 0; g < groups; g++) {
      words[w + g]! |= (zp[r * groups + g]! & 0xf) << shift;
    }
  }
  return words;
}

/** The inverse of {@linkcode packZeroPoints}: zero points [rows, groups]. */
export function unpackZeroPoints(
  words: Int32Array,
  rows: number,
  groups: number,
): Uint8Array {
  checkRows(words.length, Math.ceil(rows / 8), groups, "zero point words");
  const zp = new Uint8Array(rows * groups);
  for (let r = 0; r < rows; r++) {
    const shift = 4 * (r & 7);
    const w = (r >> 3) * groups;
    for (let g = 0; g < groups; g++) {
      zp[r * groups + g] = (words[w + g]! >>> shift) & 0xf;
    }
  }
  return zp;
}
