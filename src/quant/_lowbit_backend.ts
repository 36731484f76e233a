// How the low-bit layers reach a kernel: through the active backend, like the
// int8 layers, so that layers never name a kernel themselves.

import type {
  Activations,
  Int4Weight,
  Int8Weight,
} from "../backend/backend.ts";
import { activeBackend } from "../backend/select.ts";
import type { FloatDType } from "../dtype.ts";

/** Runs W8A8 on the active backend. */
export async function runW8A8(
  x: Float32Array,
  m: number,
  w: Int8Weight,
  bias: Float32Array | null,
): Promise<Float32Array> {
  return await (await activeBackend()).linearW8A8(x, m, w, bias);
}

/** Runs W4A16 on the active backend. */
export async function runInt4(
  x: Activations,
  xDtype: FloatDType,
  m: number,
  w: Int4Weight,
  bias: Float32Array | null,
): Promise<Float32Array> {
  return await (await activeBackend()).linearInt4(x, xDtype, m, w, bias);
}

/** Frees what the active backend keeps for a low-bit weight. */
export async function releaseLowBit(w: Int8Weight | Int4Weight): Promise<void> {
  const backend = await activeBackend().catch(() => null);
  backend?.release(w);
}
