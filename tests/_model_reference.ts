// Reads the model reference fixtures of tests/fixtures/models (made by
// tools/make_model_fixtures.py with Hugging Face transformers).
import { join } from "node:path";
import { SafetensorsFile } from "../src/io/safetensors.ts";

/** The folder of the fixtures. */
export const MODELS_DIR: string = join(
  import.meta.dirname!,
  "fixtures",
  "models",
);

/** The family fixtures present (folders with a reference). */
export function familyFixtures(): string[] {
  const names: string[] = [];
  for (const e of Deno.readDirSync(MODELS_DIR)) {
    if (!e.isDirectory) continue;
    try {
      Deno.statSync(join(MODELS_DIR, e.name, "reference.safetensors"));
      names.push(e.name);
    } catch { /* not a family fixture */ }
  }
  return names.sort();
}

/** One reference tensor as numbers (I64 → number, floats → f32). */
export async function readReference(
  file: string,
  name: string,
): Promise<{ data: number[] | Float32Array; shape: readonly number[] }> {
  const f = await SafetensorsFile.open(file);
  try {
    const t = await f.read(name);
    if (t.dtype === "i64") {
      return {
        data: Array.from(t.data as BigInt64Array, Number),
        shape: t.shape,
      };
    }
    return { data: t.toF32Array(), shape: t.shape };
  } finally {
    f.close();
  }
}

/** Largest |a − b| over two arrays of equal length. */
export function maxAbsDiff(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
): number {
  if (a.length !== b.length) {
    throw new RangeError(`lengths differ: ${a.length} vs ${b.length}`);
  }
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Largest |x|. */
export function absMax(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** Greedy continuation of `prompt` for `n` tokens through the engine, one step per token. */
export async function greedy(
  engine: {
    reset(): void;
    stepAndSample(
      t: readonly number[],
      pos: number,
      s: { temperature: number; topK: number; topP: number },
      u: number,
    ): Promise<number>;
  },
  prompt: readonly number[],
  n: number,
): Promise<number[]> {
  engine.reset();
  const g = { temperature: 0, topK: 0, topP: 1 };
  const out = [...prompt];
  let next = await engine.stepAndSample(prompt, 0, g, 0);
  out.push(next);
  while (out.length < prompt.length + n) {
    next = await engine.stepAndSample([next], out.length - 1, g, 0);
    out.push(next);
  }
  engine.reset();
  return out;
}
