// How the low-bit layers reach a kernel: the active backend's own method when
// it has one (a WebGPU backend adds `linearW8A8` / `linearInt4`), else the CPU
// kernels of backend/cpu_lowbit.ts. Layers never name a kernel themselves.

import type {
  Activations,
  Backend,
  F32Weight,
  Int8Weight,
} from "../backend/backend.ts";
import {
  type Int4Weight,
  linearInt4,
  linearW8A8,
} from "../backend/cpu_lowbit.ts";
import { activeBackend } from "../backend/select.ts";
import { floatArrayToF32, type FloatDType } from "../dtype.ts";

/** The methods a backend may add for the low-bit schemes (proposed for Backend). */
export interface LowBitMethods {
  linearW8A8(
    x: Float32Array,
    m: number,
    w: Int8Weight,
    bias: Float32Array | null,
  ): Promise<Float32Array>;
  linearInt4(
    x: Activations,
    xDtype: FloatDType,
    m: number,
    w: Int4Weight,
    bias: Float32Array | null,
  ): Promise<Float32Array>;
}

type MaybeLowBit = Backend & Partial<LowBitMethods>;

/** Runs W8A8 on the active backend, or on the CPU kernel when it has none. */
export async function runW8A8(
  x: Float32Array,
  m: number,
  w: Int8Weight,
  bias: Float32Array | null,
): Promise<Float32Array> {
  const backend: MaybeLowBit = await activeBackend();
  if (typeof backend.linearW8A8 === "function") {
    return await backend.linearW8A8(x, m, w, bias);
  }
  return linearW8A8(x, m, w, bias);
}

/** Runs W4A16 on the active backend, or on the CPU kernel when it has none. */
export async function runInt4(
  x: Activations,
  xDtype: FloatDType,
  m: number,
  w: Int4Weight,
  bias: Float32Array | null,
): Promise<Float32Array> {
  const backend: MaybeLowBit = await activeBackend();
  if (typeof backend.linearInt4 === "function") {
    return await backend.linearInt4(x, xDtype, m, w, bias);
  }
  return linearInt4(floatArrayToF32(x, xDtype), m, w, bias);
}

/** Frees what the active backend keeps for a low-bit weight (GPU buffers). */
export async function releaseLowBit(w: Int8Weight | Int4Weight): Promise<void> {
  const backend = await activeBackend().catch(() => null);
  // Backend.release is typed for Int8Weight | F32Weight today; a backend that
  // caches Int4Weight objects must accept them too (see the proposal).
  backend?.release(w as Int8Weight | F32Weight);
}
