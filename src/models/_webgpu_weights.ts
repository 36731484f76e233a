// The WebGPU engine's matmul layers: a Linear, quantized layer or tied LM head
// uploaded once in its stored form (f32/bf16/f16 floats, int8 + scales, int4 +
// group scales), split by rows where it exceeds a storage binding, and the
// kernel files (kernels/gemv*.wgsl, gemm*.wgsl and their loaders) that read it.

import { Linear } from "../linear.ts";
import { materialize, type Tensor } from "../tensor.ts";
import { Int8LinearLayer } from "../quant/int8_linear_layer.ts";
import { W8A8LinearLayer } from "../quant/w8a8_linear_layer.ts";
import { W4A16LinearLayer } from "../quant/w4a16_linear_layer.ts";
import { TiedLMHead } from "./lm_head.ts";
import { activationDtype, type MatmulLayer } from "./linear_call.ts";
import gemv from "../../kernels/gemv.wgsl" with { type: "text" };
import gemvReduce from "../../kernels/gemv_reduce.wgsl" with { type: "text" };
import gemm from "../../kernels/gemm.wgsl" with { type: "text" };
import gemvInt4 from "../../kernels/gemv_int4.wgsl" with { type: "text" };
import gemvW8A8 from "../../kernels/gemv_w8a8.wgsl" with { type: "text" };
import gemmW8A8 from "../../kernels/gemm_w8a8.wgsl" with { type: "text" };
import quantizeX from "../../kernels/quantize_x_i8.wgsl" with { type: "text" };
import i8Codes from "../../kernels/i8_codes.wgsl" with { type: "text" };
import w8a8Output from "../../kernels/w8a8_output.wgsl" with { type: "text" };
import dotI8Dot4 from "../../kernels/dot_i8_dot4.wgsl" with { type: "text" };
import dotI8Shift from "../../kernels/dot_i8_shift.wgsl" with { type: "text" };
import xF32 from "../../kernels/load_x_f32.wgsl" with { type: "text" };
import xRounded from "../../kernels/load_x_f32_rounded.wgsl" with {
  type: "text",
};
import wF32 from "../../kernels/load_w_f32.wgsl" with { type: "text" };
import wBf16 from "../../kernels/load_w_bf16.wgsl" with { type: "text" };
import wF16 from "../../kernels/load_w_f16.wgsl" with { type: "text" };
import wI8Unpack4x from "../../kernels/load_w_i8_unpack4x.wgsl" with {
  type: "text",
};
import wI8Shift from "../../kernels/load_w_i8_shift.wgsl" with { type: "text" };
import wI4 from "../../kernels/load_w_i4.wgsl" with { type: "text" };
import roundF32 from "../../kernels/round_f32.wgsl" with { type: "text" };
import roundBf16 from "../../kernels/round_bf16.wgsl" with { type: "text" };
import roundF16 from "../../kernels/round_f16.wgsl" with { type: "text" };

/** Activation rows up to which a matmul runs as a GEMV (as the backend). */
export const GEMV_MAX_M = 8;
const GEMV_ROWS = 8;
const TILE = 64;
const MAX_GROUPS = 65535;
const U = GPUBufferUsage;

/** Rounds `v` up to a multiple of `to`. */
export const roundUp = (v: number, to: number): number =>
  Math.ceil(v / to) * to;

/** How a matmul's weights are stored on the GPU. */
export type MatmulKind = "f32" | "bf16" | "f16" | "int8" | "w8a8" | "int4";

/** A matmul layer resident on the GPU. */
export interface GpuMatmul {
  /** The layer's path, for messages. */
  readonly name: string;
  readonly kind: MatmulKind;
  /** Output and input features; inputs are read in rows of `kPad`. */
  readonly n: number;
  readonly k: number;
  readonly kPad: number;
  /** What the activations are rounded to on the way in and out. */
  readonly act: "f32" | "bf16" | "f16";
  /** Row chunks, each within one binding (int4: codes, scales, zero points). */
  readonly chunks: { buffers: GPUBuffer[]; row0: number; rows: number }[];
  /** (scale, zero point) per output row. */
  readonly rowp: GPUBuffer;
  /** The bias (zeros where there is none), f32 [n]. */
  readonly bias: GPUBuffer;
  /** Bytes of weights (and scales) one pass over the layer reads. */
  readonly weightBytes: number;
  /** int4 group size. */
  readonly groupSize: number;
}

interface Upload {
  kind: MatmulKind;
  // Arrays of `len` elements per row, padded to `padLen` (chunked together).
  arrays: [ArrayBufferView, number, number][];
  rowp: (j: number) => [number, number];
  bias: Float32Array | null;
  groupSize: number;
}

async function f32Of(
  t: Tensor | null | undefined,
): Promise<Float32Array | null> {
  return t ? (await materialize(t)).toF32Array() : null;
}

async function describe(layer: MatmulLayer, name: string): Promise<Upload> {
  const one = (): [number, number] => [1, 0];
  if (layer instanceof TiedLMHead || layer instanceof Linear) {
    const source = layer instanceof TiedLMHead
      ? await layer.embedding.table()
      : await materialize(layer.weight);
    const bias = layer instanceof Linear && layer.bias
      ? await f32Of(await materialize(layer.bias))
      : null;
    const k = layer.inFeatures;
    const dtype = source.dtype;
    if (dtype !== "f32" && dtype !== "bf16" && dtype !== "f16") {
      throw new TypeError(`${name}: a ${dtype} float weight is not supported`);
    }
    return {
      kind: dtype,
      arrays: [[source.data as ArrayBufferView, k, roundUp(k, 16)]],
      rowp: one,
      bias,
      groupSize: 0,
    };
  }
  if (layer instanceof Int8LinearLayer) {
    const s = layer.scales.data as Float32Array;
    const zp = (layer.zeroPoints?.data as Int8Array | undefined) ?? null;
    const k = layer.inFeatures;
    return {
      kind: layer instanceof W8A8LinearLayer ? "w8a8" : "int8",
      arrays: [[layer.int8Weights.data as Int8Array, k, roundUp(k, 16)]],
      rowp: (j) => [s[j]!, zp ? zp[j]! : 0],
      bias: await f32Of(layer.bias),
      groupSize: 0,
    };
  }
  if (layer instanceof W4A16LinearLayer) {
    const g = layer.groupSize, k = layer.inFeatures, n = layer.outFeatures;
    if (!(g === 32 || g === 64 || g === 128) || k % g !== 0) {
      throw new RangeError(
        `${name}: the WebGPU int4 kernels take group sizes 32, 64 or 128 dividing k, got ${g} for k = ${k}`,
      );
    }
    const groups = k / g;
    const zps = (layer.zeroPoints?.data as Uint8Array | undefined) ??
      new Uint8Array(n * groups).fill(8);
    return {
      kind: "int4",
      arrays: [
        [layer.int4Weights.data as Uint8Array, k / 2, k / 2],
        [layer.scales.data as Float32Array, groups, groups],
        [zps, groups, groups],
      ],
      rowp: one,
      bias: await f32Of(layer.bias),
      groupSize: g,
    };
  }
  throw new TypeError(
    `${name}: ${layer.constructor.name} has no WebGPU kernel`,
  );
}

/**
 * Uploads `layers` (found at `name`) as one matmul whose output rows are
 * theirs in order — q | k | v, gate | up: one dispatch instead of several —
 * or, when they are not stored alike (a Quantizer excluded one), one each.
 * `act16` is the model's 16-bit dtype, which W8A16 layers round their
 * activations to, as on the CPU. `rowOrder[j]`, where given (one layer), is
 * the layer's output row that becomes GPU row j (CodeGen's interleaved qkv
 * becomes plain q | k | v).
 */
export async function uploadMatmuls(
  device: GPUDevice,
  layers: readonly MatmulLayer[],
  name: string,
  act16: "bf16" | "f16",
  maxBinding: number,
  rowOrder: Int32Array | null = null,
): Promise<GpuMatmul[]> {
  const us = await Promise.all(layers.map((l) => describe(l, name)));
  const act = (l: MatmulLayer) =>
    activationDtype(l, act16) as "f32" | "bf16" | "f16";
  const alike = layers.every((l, i) =>
    us[i]!.kind === us[0]!.kind && us[i]!.groupSize === us[0]!.groupSize &&
    l.inFeatures === layers[0]!.inFeatures && act(l) === act(layers[0]!) &&
    (us[i]!.bias === null) === (us[0]!.bias === null)
  );
  const made: GpuMatmul[] = [];
  try {
    if (alike) {
      made.push(
        upload(device, layers, us, name, act(layers[0]!), maxBinding, rowOrder),
      );
    } else {
      for (const [i, l] of layers.entries()) {
        made.push(
          upload(device, [l], [us[i]!], name, act(l), maxBinding, null),
        );
      }
    }
  } catch (e) {
    for (const m of made) destroyMatmul(m);
    throw e;
  }
  return made;
}

function upload(
  device: GPUDevice,
  layers: readonly MatmulLayer[],
  us: Upload[],
  name: string,
  act: "f32" | "bf16" | "f16",
  maxBinding: number,
  rowOrder: Int32Array | null,
): GpuMatmul {
  const u = us[0]!;
  const k = layers[0]!.inFeatures;
  const n = layers.reduce((s, l) => s + l.outFeatures, 0);
  // Output row j of the whole → (layer, its row).
  const starts = layers.map((_, i) =>
    layers.slice(0, i).reduce((s, l) => s + l.outFeatures, 0)
  );
  const source = (j: number): [Upload, number] => {
    const r = rowOrder ? rowOrder[j]! : j;
    let l = layers.length - 1;
    while (starts[l]! > r) l--;
    return [us[l]!, r - starts[l]!];
  };
  const bpe = (a: ArrayBufferView) =>
    (a as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT;
  const rowBytes = u.arrays.map(([a, , pad]) => pad * bpe(a));
  let per = Math.min(
    Math.floor(maxBinding / Math.max(...rowBytes)),
    MAX_GROUPS * GEMV_ROWS,
  );
  if (per >= TILE) per -= per % TILE;
  if (per < 1 || 8 * n > maxBinding) {
    throw new RangeError(
      `${name}: a ${n}×${k} weight does not fit the GPU's storage bindings`,
    );
  }
  const plain = layers.length === 1 && !rowOrder;
  const chunks = [];
  for (let row0 = 0; row0 < n; row0 += per) {
    const rows = Math.min(per, n - row0);
    const buffers = u.arrays.map(([first, len, padLen], a) => {
      const e = bpe(first);
      const buffer = device.createBuffer({
        label: `${name} rows ${row0}+${rows}`,
        size: roundUp(rows * rowBytes[a]!, 4),
        usage: U.STORAGE,
        mappedAtCreation: true,
      });
      const dst = new Uint8Array(buffer.getMappedRange());
      const bytes = (x: Upload) => {
        const v = x.arrays[a]![0];
        return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
      };
      if (plain && len === padLen) {
        dst.set(bytes(u).subarray(row0 * len * e, (row0 + rows) * len * e));
      } else {
        for (let r = 0; r < rows; r++) {
          const [x, row] = source(row0 + r);
          const at = row * len * e;
          dst.set(bytes(x).subarray(at, at + len * e), r * padLen * e);
        }
      }
      buffer.unmap();
      return buffer;
    });
    chunks.push({ buffers, row0, rows });
  }
  const rowp = device.createBuffer({
    label: `${name} scales`,
    size: 8 * n,
    usage: U.STORAGE,
    mappedAtCreation: true,
  });
  const bias = device.createBuffer({
    label: `${name} bias`,
    size: 4 * n,
    usage: U.STORAGE,
    mappedAtCreation: true,
  });
  const rp = new Float32Array(rowp.getMappedRange());
  const b = new Float32Array(bias.getMappedRange());
  for (let j = 0; j < n; j++) {
    const [x, row] = source(j);
    rp.set(x.rowp(row), 2 * j);
    b[j] = x.bias ? x.bias[row]! : 0;
  }
  rowp.unmap();
  bias.unmap();
  return {
    name,
    kind: u.kind,
    n,
    k,
    kPad: roundUp(k, 16),
    act,
    chunks,
    rowp,
    bias,
    weightBytes: us.reduce(
      (s, x) =>
        s + x.arrays.reduce((t, [a]) => t + a.byteLength, 0) +
        (x.kind === "int8" || x.kind === "w8a8"
          ? 8 * (x.arrays[0]![0].byteLength / k)
          : 0),
      0,
    ),
    groupSize: u.groupSize,
  };
}

/** Frees a matmul's buffers. */
export function destroyMatmul(m: GpuMatmul): void {
  for (const c of m.chunks) for (const b of c.buffers) b.destroy();
  m.rowp.destroy();
  m.bias.destroy();
}

/** Puts `enable`/`requires` directives first, as WGSL wants. */
export function assemble(parts: string[]): string {
  const lines = parts.join("\n").split("\n");
  const directive = (l: string) => /^(enable|requires) /.test(l);
  return [...lines.filter(directive), ...lines.filter((l) => !directive(l))]
    .join("\n");
}

/** One kernel of a matmul: its code and how its grid is shaped. */
export interface MatmulPass {
  code: string;
  grid: "gemv" | "gemm" | "rows";
}

/** The kernels that run `m` on `rows` activation rows, in order. */
export function matmulPasses(
  m: GpuMatmul,
  rows: number,
  dot4: boolean,
): MatmulPass[] {
  const small = rows <= GEMV_MAX_M;
  const round = { f32: roundF32, bf16: roundBf16, f16: roundF16 }[m.act];
  const xl = m.act === "f32" ? xF32 : xRounded;
  const pass = (gemvParts: string[], gemmParts: string[]): MatmulPass =>
    small
      ? { code: assemble([round, gemvReduce, ...gemvParts]), grid: "gemv" }
      : { code: assemble([round, ...gemmParts]), grid: "gemm" };
  if (m.kind === "w8a8") {
    const parts = [dot4 ? dotI8Dot4 : dotI8Shift, w8a8Output];
    return [
      { code: assemble([i8Codes, quantizeX]), grid: "rows" },
      pass([...parts, gemvW8A8], [...parts, gemmW8A8]),
    ];
  }
  if (m.kind === "int4") {
    const group = `const W_GROUP = ${m.groupSize}u;`;
    return [pass([xl, group, gemvInt4], [xl, group, wI4, gemm])];
  }
  const wl = {
    f32: wF32,
    bf16: wBf16,
    f16: wF16,
    int8: dot4 ? wI8Unpack4x : wI8Shift,
  }[m.kind];
  return [pass([xl, wl, gemv], [xl, wl, gemm])];
}

/** Workgroups of a matmul pass over one chunk of `chunkRows` weight rows. */
export function matmulGrid(
  grid: MatmulPass["grid"],
  chunkRows: number,
  rows: number,
): [number, number] {
  return grid === "rows"
    ? [rows, 1]
    : grid === "gemv"
    ? [Math.ceil(chunkRows / GEMV_ROWS), rows]
    : [Math.ceil(chunkRows / TILE), Math.ceil(rows / TILE)];
}
