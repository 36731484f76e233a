/**
 * Output shard plans: the input's own plan, or a greedy split at a maximum
 * shard size with Hugging Face's names (`model-00001-of-00003.safetensors`).
 *
 * @module
 */

const UNITS: Readonly<Record<string, number>> = {
  "": 1,
  B: 1,
  K: 1e3,
  KB: 1e3,
  M: 1e6,
  MB: 1e6,
  G: 1e9,
  GB: 1e9,
  T: 1e12,
  TB: 1e12,
  KIB: 2 ** 10,
  MIB: 2 ** 20,
  GIB: 2 ** 30,
  TIB: 2 ** 40,
};

/**
 * Parses a size such as `5GB`, `500MB`, `2GiB`, `100M` or `1048576` (bytes;
 * decimal units as Hugging Face uses them, `iB` units binary). Returns
 * undefined when the text is not a positive size.
 *
 * @example
 * ```ts
 * import { parseSize } from "./quantize_checkpoint.ts";
 * import assert from "node:assert/strict";
 * assert.equal(parseSize("5GB"), 5e9);
 * assert.equal(parseSize("2GiB"), 2 * 2 ** 30);
 * assert.equal(parseSize("lots"), undefined);
 * ```
 */
export function parseSize(text: string): number | undefined {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!m) return undefined;
  const unit = UNITS[m[2]!.toUpperCase()];
  if (unit === undefined) return undefined;
  const n = Math.floor(Number(m[1]) * unit);
  return n > 0 && Number.isSafeInteger(n) ? n : undefined;
}

/** Hugging Face's shard name: `model-00001-of-00003.safetensors`. */
export function shardName(i: number, n: number): string {
  const w = Math.max(5, String(n).length);
  return `model-${String(i + 1).padStart(w, "0")}-of-${
    String(n).padStart(w, "0")
  }.safetensors`;
}

/**
 * Splits items (in order) into groups of at most `max` bytes, greedily; an
 * item larger than `max` gets a group of its own.
 */
export function splitBySize<T>(
  items: readonly T[],
  size: (t: T) => number,
  max: number,
): T[][] {
  const groups: T[][] = [];
  let cur: T[] = [];
  let bytes = 0;
  for (const it of items) {
    const s = size(it);
    if (cur.length > 0 && bytes + s > max) {
      groups.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(it);
    bytes += s;
  }
  if (cur.length > 0 || groups.length === 0) groups.push(cur);
  return groups;
}
