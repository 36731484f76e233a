/**
 * {@linkcode WebGpuEngine}: the whole forward pass of a decoder model on a
 * WebGPU device. Weights are uploaded once in their stored form;
 * activations, the KV cache and the logits stay in GPU buffers for the whole
 * step, and a step reads back only what the caller asked for: the sampled
 * token id (4 bytes, sampling runs in a kernel) or the logits.
 *
 * A step is a plan of dispatches — embedding gather, then per layer norm,
 * q/k/v matmuls, RoPE + KV append, attention, output matmul, add + norm,
 * gate/up matmuls, GLU, down matmul, then final norm, LM head and sampling —
 * whose bind groups are built once per step shape (token count, what comes
 * back) and replayed; buffers are allocated when the engine is made, never
 * per token. Model shapes are pipeline-override constants. Greedy decoding
 * runs ahead on the device (each sampled id feeds the next step there, up to
 * 16 steps per submission and one readback), since a `mapAsync` costs ~11 ms
 * in Deno whatever its size.
 *
 * @module
 */

import { createWebGpuBackend, probeWebGpu } from "../backend/webgpu.ts";
import type { WebGpuBackend } from "../backend/webgpu.ts";
import { materialize } from "../tensor.ts";
import type { DecoderModel } from "./decoder_model.ts";
import type { Engine, EngineStats, SamplerParams } from "./engine.ts";
import { checkSamplerParams } from "./sampler.ts";
import { checkLogits, checkStep, defaultContextLength } from "./cpu_engine.ts";
import { LayerNorm, type Norm, RMSNorm } from "./norms.ts";
import type { MatmulLayer } from "./linear_call.ts";
import type { Embedding } from "./embedding.ts";
import {
  computePipeline,
  type Constants,
  declaredBindings,
  MODEL_KERNELS,
  type ModelKernel,
} from "./_webgpu_kernels.ts";
import {
  destroyMatmul,
  GEMV_MAX_M,
  type GpuMatmul,
  matmulGrid,
  matmulPasses,
  roundUp,
  uploadMatmuls,
} from "./_webgpu_weights.ts";

/** Options of {@linkcode createWebGpuEngine}. */
export interface WebGpuEngineOptions {
  /** Positions the KV cache holds (default: the model's, at most 4096). */
  contextLength?: number;
  /** The 16-bit dtype W8A16/W4A16 layers take (default: the checkpoint's, else bf16). */
  act16?: "f16" | "bf16";
  /** The adapter to run on (default: `navigator.gpu`'s high-performance one). */
  adapter?: GPUAdapter;
  /** Token rows per prefill dispatch plan (default 256). */
  prefillChunk?: number;
  /** Unpack int8 weights with shifts even where `unpack4xI8` exists. */
  disableDot4?: boolean;
  /** Caps a storage binding below the device limit (forces weight splitting). */
  maxBindingBytes?: number;
}

const U = GPUBufferUsage;
const ONE = 0x3f800000; // 1.0 as f32 bits: the W8A8 epilogue's uniform `one`
const PARAMS_ALIGN = 256;
const MAX_AHEAD = 16; // greedy decode steps per submission, at most

type Mode = "none" | "last" | "all";
type Op =
  | {
    pipeline: GPUComputePipeline;
    group: GPUBindGroup;
    grid: [number, number];
  }
  | { copy: [GPUBuffer, number, GPUBuffer, number, number] };
/** A matmul dispatch whose uniform (binding 5) is a slot of the plan's params buffer. */
interface Deferred {
  pipeline: GPUComputePipeline;
  entries: GPUBindGroupEntry[];
  slot: number;
  grid: [number, number];
}
interface Plan {
  ops: Op[];
  params: GPUBuffer | null;
  dispatches: number;
  /** Whether a run was checked for validation errors (the first one is). */
  checked: boolean;
}

/**
 * Matmul layers of the tree that read one input (q, k, v; gate, up), looked
 * up again at every step (a Quantizer may swap them); on the GPU one fused
 * matmul where they are stored alike, else one each.
 */
interface Slot {
  name: string;
  gets: (() => MatmulLayer)[];
  rowOrder: Int32Array | null;
  layers: MatmulLayer[];
  gpus: GpuMatmul[];
}

interface LayerBuffers {
  k: GPUBuffer;
  v: GPUBuffer;
}

/**
 * Makes the WebGPU engine of `model`: opens a device on the adapter with its
 * largest buffer limits, uploads every weight, allocates the activations and
 * KV cache for `contextLength` positions and compiles the kernels.
 *
 * @param model The decoder (from `loadCausalLM(…).model` or `buildDecoderModel`).
 * @param options Context length, adapter, 16-bit activation dtype.
 * @returns The engine; `dispose()` frees the device.
 *
 * @example Greedy logits of TinyStories-656K on the GPU
 * ```ts
 * import { createWebGpuEngine, loadCausalLM, probeWebGpu } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const { adapter } = await probeWebGpu();
 * if (adapter) {
 *   const lm = await loadCausalLM("models/tinystories-656k", { backend: "cpu" });
 *   const gpu = await createWebGpuEngine(lm.model, { adapter, contextLength: 32 });
 *   const logits = await gpu.step([1, 2, 3], 0, "last");
 *   assert.equal(logits.length, lm.config.vocabSize);
 *   gpu.dispose();
 *   lm.dispose();
 * }
 * ```
 */
export async function createWebGpuEngine(
  model: DecoderModel,
  options: WebGpuEngineOptions = {},
): Promise<WebGpuEngine> {
  let adapter = options.adapter ?? null;
  if (!adapter) {
    const probe = await probeWebGpu();
    if (!probe.adapter) {
      throw new Error(
        `The WebGPU engine needs an adapter, and navigator.gpu gave none: ${probe.description}`,
      );
    }
    adapter = probe.adapter;
  }
  const backend = await createWebGpuBackend(adapter, "model engine", {
    timing: true,
    ...(options.disableDot4 ? { disableDot4: true } : {}),
  });
  return await WebGpuEngine.open(model, backend, options);
}

/**
 * The {@linkcode Engine} that runs a decoder on a WebGPU device: every
 * activation stays on the GPU, one small readback per step. Made by
 * {@linkcode createWebGpuEngine}.
 */
export class WebGpuEngine implements Engine {
  /** The backend's name. */
  readonly name = "webgpu" as const;
  /** The model the engine runs. */
  readonly model: DecoderModel;
  /** Positions the KV cache holds. */
  readonly contextLength: number;
  /** The 16-bit dtype of the W8A16 / W4A16 layers' activations. */
  readonly act16: "f16" | "bf16";
  readonly #backend: WebGpuBackend;
  readonly #device: GPUDevice;
  readonly #maxBinding: number;
  readonly #chunk: number;
  readonly #chunkAll: number;
  #slots: Slot[] = [];
  #buffers = new Map<string, GPUBuffer>();
  #owned: GPUBuffer[] = [];
  #caches: LayerBuffers[] = [];
  #tables: { buffer: GPUBuffer; row0: number; rows: number }[][] = [];
  #norms = new Map<
    Norm,
    { w: GPUBuffer; b: GPUBuffer | null; dim: number }
  >();
  #plans = new Map<string, Plan>();
  #pipelines = new Map<string, GPUComputePipeline>();
  #query: GPUQuerySet | null = null;
  #filled = 0;
  #queue: Promise<unknown> = Promise.resolve();
  #disposed = false;
  #decodeMs: number[] = [];
  // While recording: the activations whose int8 codes are in "qx" (W8A8
  // layers reading the same input — q, k, v; gate, up — share one pass).
  #quantized: GPUBuffer | null = null;
  // Greedy decode runs ahead on the GPU: each step's sampled id is the next
  // step's token without a trip through the host, k steps per submission and
  // one readback of their k ids; later calls that continue the sequence
  // (token = the id returned, pos + 1) take them from here.
  #ahead: { pos: number; token: number; ids: number[]; k: number } | null =
    null;
  #embedRowBytes = 0;

  /**
   * Builds the engine on `backend`'s device (uploads, buffers, kernels); on
   * failure frees what it made, device included. {@linkcode createWebGpuEngine}
   * opens the device and calls this.
   */
  static async open(
    model: DecoderModel,
    backend: WebGpuBackend,
    options: WebGpuEngineOptions = {},
  ): Promise<WebGpuEngine> {
    const engine = new WebGpuEngine(model, backend, options);
    try {
      await engine.#init();
    } catch (e) {
      engine.dispose();
      throw e;
    }
    return engine;
  }

  private constructor(
    model: DecoderModel,
    backend: WebGpuBackend,
    options: WebGpuEngineOptions,
  ) {
    const c = model.config;
    this.model = model;
    this.#backend = backend;
    this.#device = backend.device;
    this.contextLength = options.contextLength ?? defaultContextLength(model);
    this.act16 = options.act16 ?? (c.dtype === "f16" ? "f16" : "bf16");
    const lim = this.#device.limits;
    const max = Math.min(
      lim.maxStorageBufferBindingSize,
      lim.maxBufferSize,
      options.maxBindingBytes ?? Infinity,
    );
    this.#maxBinding = max - (max % 16);
    // Rows per plan: every per-row buffer must fit one binding.
    const widest = 4 * Math.max(
      2 * c.intermediateSize,
      (c.numHeads + 2 * c.numKvHeads) * c.headDim,
      roundUp(c.hiddenSize, 16),
    );
    this.#chunk = Math.max(
      1,
      Math.min(
        options.prefillChunk ?? 256,
        this.contextLength,
        Math.floor(this.#maxBinding / widest),
      ),
    );
    this.#chunkAll = Math.max(
      1,
      Math.min(
        this.#chunk,
        Math.floor(Math.min(this.#maxBinding, 2 ** 26) / (4 * c.vocabSize)),
      ),
    );
    if (this.#device.features.has("timestamp-query")) {
      this.#query = this.#device.createQuerySet({
        type: "timestamp",
        count: 2,
      });
    }
  }

  async #init(): Promise<void> {
    const d = this.#device;
    d.pushErrorScope("out-of-memory");
    d.pushErrorScope("validation");
    let thrown: unknown = null;
    try {
      await this.#build();
    } catch (e) {
      thrown = e;
    }
    const invalid = await d.popErrorScope();
    const oom = await d.popErrorScope();
    if (thrown) throw thrown;
    if (oom || invalid) {
      throw new Error(
        `Cannot set up the WebGPU engine: ${(oom ?? invalid)!.message}`,
      );
    }
    this.#plan(1, "last", true); // compile the decode step's kernels now
  }

  async #build(): Promise<void> {
    const { parts } = this.model;
    const slot = (
      name: string,
      gets: (() => MatmulLayer)[],
      rowOrder: Int32Array | null = null,
    ): Slot => {
      const s = { name, gets, rowOrder, layers: [], gpus: [] };
      this.#slots.push(s);
      return s;
    };
    for (const [i, layer] of parts.layers.entries()) {
      const a = layer.parts.attention, p = a.options.projections;
      const at = `model.layers.${i}.self_attn`;
      if ("qkv" in p) {
        const order = p.mpNum
          ? mpRowOrder(a.options.numHeads * a.options.headDim, p.mpNum)
          : null;
        slot(`${at}.${p.qkv}`, [() => a.projection(p.qkv)], order);
      } else {
        slot(`${at}.${p.q}`, [p.q, p.k, p.v].map((q) => () => a.projection(q)));
      }
      slot(`${at}.${p.o}`, [() => a.projection(p.o)]);
      const mlp = layer.parts.mlp, mp = mlp.projections;
      const ml = `model.layers.${i}.mlp`;
      if ("gate" in mp) {
        slot(
          `${ml}.${mp.gate}`,
          [mp.gate, mp.up].map((g) => () => mlp.layer(g)),
        );
        slot(`${ml}.${mp.down}`, [() => mlp.layer(mp.down)]);
      } else {
        for (const name of Object.values(mp)) {
          slot(`${ml}.${name}`, [() => mlp.layer(name)]);
        }
      }
      for (
        const norm of [
          layer.parts.inputNorm,
          layer.parts.mlpNorm,
          layer.parts.postAttentionNorm,
          layer.parts.postMlpNorm,
        ]
      ) {
        if (norm) await this.#uploadNorm(norm);
      }
    }
    if (parts.finalNorm) await this.#uploadNorm(parts.finalNorm);
    for (const path of [parts.projectIn, parts.projectOut, parts.lmHead]) {
      if (path) slot(path, [() => this.model.matmul(path)]);
    }
    await this.#syncSlots();
    // A decode step reads one row of each table (the head reads the whole
    // token table when tied: counted in its matmul).
    for (const e of [parts.embedTokens, parts.embedPositions]) {
      if (!e) continue;
      this.#tables.push(await this.#uploadTable(e));
      this.#embedRowBytes += e.embeddingDim *
        (e.weight.dtype === "f32" ? 4 : 2);
    }
    this.#allocate();
  }

  /** Uploads layers the tree now holds that the GPU does not; true if any changed. */
  async #syncSlots(): Promise<boolean> {
    let changed = false;
    for (const s of this.#slots) {
      const layers = s.gets.map((get) => get());
      if (layers.every((l, i) => l === s.layers[i])) continue;
      const gpus = await uploadMatmuls(
        this.#device,
        layers,
        s.name,
        this.act16,
        this.#maxBinding,
        s.rowOrder,
      );
      for (const g of s.gpus) destroyMatmul(g);
      s.layers = layers;
      s.gpus = gpus;
      changed = true;
    }
    if (changed) this.#dropPlans();
    return changed;
  }

  #dropPlans(): void {
    for (const p of this.#plans.values()) p.params?.destroy();
    this.#plans.clear();
  }

  async #uploadNorm(norm: Norm): Promise<void> {
    if (this.#norms.has(norm)) return;
    let w: Float32Array, b: Float32Array | null = null;
    if (norm instanceof RMSNorm) {
      w = await norm.scale();
    } else if (norm instanceof LayerNorm) {
      w = (await materialize(norm.getTensor("weight")!)).toF32Array();
      const bias = norm.getTensor("bias");
      b = bias
        ? (await materialize(bias)).toF32Array()
        : new Float32Array(w.length);
    } else {
      throw new TypeError(`${norm.typeName()} has no WebGPU kernel`);
    }
    this.#norms.set(norm, {
      w: this.#upload(w, "norm weight"),
      b: b ? this.#upload(b, "norm bias") : null,
      dim: w.length,
    });
  }

  #upload(data: ArrayBufferView, label: string): GPUBuffer {
    const size = roundUp(Math.max(data.byteLength, 16), 16);
    const buffer = this.#device.createBuffer({
      label,
      size,
      usage: U.STORAGE,
      mappedAtCreation: true,
    });
    new Uint8Array(buffer.getMappedRange()).set(
      new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    );
    buffer.unmap();
    this.#owned.push(buffer);
    return buffer;
  }

  /** An embedding table in its stored dtype, in row chunks that fit a binding. */
  async #uploadTable(
    e: Embedding,
  ): Promise<{ buffer: GPUBuffer; row0: number; rows: number }[]> {
    const t = await e.table();
    const bpe = t.dtype === "f32" ? 4 : 2;
    const rowBytes = e.embeddingDim * bpe;
    let per = Math.floor(this.#maxBinding / rowBytes);
    if (per < 1) throw new RangeError("An embedding row exceeds a binding");
    if ((per * rowBytes) % 4 !== 0) per -= 1; // chunks start on a word
    const out = [];
    const bytes = new Uint8Array(
      t.data.buffer,
      t.data.byteOffset,
      t.data.byteLength,
    );
    for (let row0 = 0; row0 < e.numEmbeddings; row0 += per) {
      const rows = Math.min(per, e.numEmbeddings - row0);
      const part = bytes.subarray(row0 * rowBytes, (row0 + rows) * rowBytes);
      out.push({ buffer: this.#upload(part, "embedding rows"), row0, rows });
    }
    return out;
  }

  #buffer(name: string, bytes: number, usage: number = U.STORAGE): GPUBuffer {
    const b = this.#device.createBuffer({
      label: name,
      size: roundUp(Math.max(bytes, 16), 16),
      usage,
    });
    this.#buffers.set(name, b);
    return b;
  }

  #allocate(): void {
    const c = this.model.config;
    const C = this.#chunk, hp = roundUp(c.hiddenSize, 16);
    const qw = c.numHeads * c.headDim, kvw = c.numKvHeads * c.headDim;
    const inter = c.intermediateSize;
    const rw = U.STORAGE | U.COPY_SRC | U.COPY_DST;
    this.#buffer("step", 16, U.UNIFORM | U.COPY_DST);
    this.#buffer("dummy", 16);
    this.#buffer("sampler", 16, U.UNIFORM | U.COPY_DST);
    this.#buffer("tokens", 4 * C, U.STORAGE | U.COPY_DST);
    this.#buffer("h0", 4 * C * hp, rw);
    this.#buffer("h1", 4 * C * hp, rw);
    this.#buffer("xn", 4 * C * hp);
    const emb = this.model.parts.embedTokens.embeddingDim;
    this.#buffer("e", 4 * C * roundUp(emb, 16));
    this.#buffer("delta", 4 * C * hp);
    this.#buffer("delta2", 4 * C * hp);
    this.#buffer("qkv", 4 * C * (qw + 2 * kvw));
    this.#buffer("k", 4 * C * kvw);
    this.#buffer("v", 4 * C * kvw);
    this.#buffer("qr", 4 * C * qw);
    this.#buffer("attn", 4 * C * roundUp(qw, 16));
    this.#buffer("gate", 4 * C * 2 * inter);
    this.#buffer("up", 4 * C * inter);
    this.#buffer("act", 4 * C * roundUp(inter, 16));
    const projOut = this.model.parts.projectOut
      ? this.#slotOf(this.model.parts.projectOut).gpus[0]!.n
      : 0;
    this.#buffer(
      "proj",
      4 * this.#chunkAll * roundUp(Math.max(projOut, 1), 16),
    );
    this.#buffer("xf", 4 * Math.max(C, 1) * hp, rw);
    this.#buffer("logits", 4 * this.#chunkAll * c.vocabSize, rw);
    this.#buffer("scratch", 4 * c.vocabSize);
    this.#buffer("picked", 16, rw);
    this.#buffer("aheadSteps", 16 * MAX_AHEAD, U.COPY_SRC | U.COPY_DST);
    this.#buffer("aheadIds", 8 * MAX_AHEAD, U.COPY_SRC | U.COPY_DST);
    this.#buffer("stamps", 16, U.QUERY_RESOLVE | U.COPY_SRC);
    const kMax = Math.max(
      ...this.#slots.flatMap((s) => s.gpus.map((g) => g.kPad)),
    );
    this.#buffer("qx", C * kMax);
    this.#buffer("qs", 8 * C);
    this.#buffer(
      "readback",
      Math.max(4 * this.#chunkAll * c.vocabSize, 8 * MAX_AHEAD) + 32,
      U.MAP_READ | U.COPY_DST,
    );
    const rope = this.model.parts.rope;
    const half = rope ? rope.rotaryDim / 2 : 0;
    const cs = new Float32Array(Math.max(1, this.contextLength * half) * 2);
    if (rope) {
      rope.reserve(this.contextLength); // the whole table once, not per position
      for (let p = 0; p < this.contextLength; p++) {
        const { cos, sin } = rope.angles(p);
        for (let j = 0; j < half; j++) {
          cs[2 * (p * half + j)] = cos[j]!;
          cs[2 * (p * half + j) + 1] = sin[j]!;
        }
      }
    }
    this.#buffers.set("rope", this.#upload(cs, "rope cos/sin"));
    const cacheBytes = 4 * this.contextLength * kvw;
    if (cacheBytes > this.#maxBinding) {
      throw new RangeError(
        `A KV cache of ${this.contextLength} positions × ${kvw} values exceeds a storage binding; use a shorter contextLength`,
      );
    }
    this.#caches = this.model.parts.layers.map((_, i) => ({
      k: this.#buffer(`kc${i}`, cacheBytes),
      v: this.#buffer(`vc${i}`, cacheBytes),
    }));
  }

  #slotOf(name: string): Slot {
    return this.#slots.find((s) => s.name === name)!;
  }

  #b(name: string): GPUBuffer {
    const b = this.#buffers.get(name);
    if (!b) throw new Error(`internal: no buffer ${name}`);
    return b;
  }

  #pipeline(
    key: string,
    code: string,
    constants: Constants,
  ): GPUComputePipeline {
    const k = `${code}\0${JSON.stringify(constants)}`;
    let p = this.#pipelines.get(k);
    if (!p) {
      p = computePipeline(this.#device, code, constants, key);
      this.#pipelines.set(k, p);
    }
    return p;
  }

  /** A dispatch of an engine kernel; `bind` maps binding numbers to buffers. */
  #kernel(
    ops: (Op | Deferred)[],
    kernel: ModelKernel,
    constants: Constants,
    bind: Record<number, GPUBuffer | GPUBufferBinding>,
    grid: [number, number],
  ): void {
    const code = MODEL_KERNELS[kernel];
    const pipeline = this.#pipeline(kernel, code, constants);
    this.#quantized = null; // it may overwrite any activations
    const entries = declaredBindings(code).map((binding) => {
      const r = bind[binding] ?? this.#b("step");
      return {
        binding,
        resource: r instanceof GPUBuffer ? { buffer: r } : r,
      };
    });
    const group = this.#device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries,
    });
    ops.push({ pipeline, group, grid });
  }

  /** The dispatches of matmul `m` from `x` into `y` for `rows` rows. */
  #matmul(
    ops: (Op | Deferred)[],
    params: number[][],
    s: Slot | GpuMatmul,
    x: GPUBuffer,
    y: GPUBuffer,
    rows: number,
  ): void {
    const m = "gpus" in s ? s.gpus[0]! : s;
    for (const pass of matmulPasses(m, rows, this.#backend.dot4)) {
      if (pass.grid === "rows") {
        if (this.#quantized === x) continue;
        this.#quantized = x;
      }
      const pipeline = this.#pipeline(`matmul ${m.kind}`, pass.code, {});
      const chunks = pass.grid === "rows" ? m.chunks.slice(0, 1) : m.chunks;
      for (const c of chunks) {
        const buffer: Record<number, GPUBuffer> = {
          0: x,
          1: c.buffers[0]!,
          2: m.rowp,
          3: m.bias,
          4: y,
          6: c.buffers[1]!,
          7: c.buffers[2]!,
          8: this.#b("qx"),
          9: this.#b("qs"),
        };
        const entries = declaredBindings(pass.code).filter((b) => b !== 5)
          .map((binding) => ({
            binding,
            resource: { buffer: buffer[binding]! },
          }));
        ops.push({
          pipeline,
          entries,
          slot: params.length,
          grid: matmulGrid(pass.grid, c.rows, rows),
        });
        params.push([m.n, m.kPad / 16, c.row0, c.rows, rows, ONE]);
      }
    }
  }

  /** The plan of a step of `n` tokens; built once per shape, then replayed. */
  #plan(n: number, mode: Mode, sample: boolean): Plan {
    const key = `${n}:${mode}:${sample}`;
    const cached = this.#plans.get(key);
    if (cached) {
      this.#plans.delete(key); // re-insert: the map keeps recency order
      this.#plans.set(key, cached);
      return cached;
    }
    const plan = this.#record(n, mode, sample);
    this.#plans.set(key, plan);
    if (this.#plans.size > 8) {
      const [oldest, p] = this.#plans.entries().next().value!;
      p.params?.destroy();
      this.#plans.delete(oldest);
    }
    return plan;
  }

  #record(n: number, mode: Mode, sample: boolean): Plan {
    const { config: c, parts } = this.model;
    const ops: (Op | Deferred)[] = [];
    const params: number[][] = [];
    this.#quantized = null;
    const b = (name: string) => this.#b(name);
    const hp = roundUp(c.hiddenSize, 16), H = c.hiddenSize;
    const stepBuf = b("step");
    const slot = (name: string) => this.#slotOf(name);
    // The residual stream ping-pongs between h0 and h1 only after post-norms.
    let h = b("h0");
    let other = b("h1");
    let pending: GPUBuffer[] = []; // deltas to add before the next norm

    const norm = (
      nm: Norm,
      x: GPUBuffer,
      out: GPUBuffer,
      opts: {
        add?: GPUBuffer[];
        ldd?: number;
        ldx?: number;
        ldo?: number;
        last?: boolean;
        /** The matmuls that read `out`: all W8A8 → norm straight into codes. */
        readers?: GpuMatmul[];
      } = {},
    ) => {
      const w = this.#norms.get(nm)!;
      const rows = opts.last ? 1 : n;
      const r = opts.readers ?? [];
      if (
        nm instanceof RMSNorm && r.length > 0 &&
        r.every((m) => m.kind === "w8a8" && m.kPad === (opts.ldo ?? hp))
      ) {
        this.#kernel(ops, "rms_norm_i8", {
          DIM: w.dim,
          LDX: opts.ldx ?? hp,
          LDD: opts.ldd ?? H,
          LDO: opts.ldo ?? hp,
          EPS: nm.eps,
          ADD: (opts.add?.length ?? 0) > 0,
          ADD2: opts.add?.length === 2,
          LAST: !!opts.last,
        }, {
          0: stepBuf,
          1: x,
          2: opts.add?.[0] ?? b("dummy"),
          3: w.w,
          6: opts.add?.[1] ?? b("dummy"),
          8: b("qx"),
          9: b("qs"),
        }, [rows, 1]);
        this.#quantized = out; // its readers skip their quantize pass
        return;
      }
      const constants: Constants = {
        DIM: w.dim,
        LDX: opts.ldx ?? hp,
        LDD: opts.ldd ?? H,
        LDO: opts.ldo ?? hp,
        EPS: (nm as RMSNorm | LayerNorm).eps,
        ADD: (opts.add?.length ?? 0) > 0,
        ADD2: opts.add?.length === 2,
        LAST: !!opts.last,
      };
      const bind: Record<number, GPUBuffer> = {
        0: stepBuf,
        1: x,
        2: opts.add?.[0] ?? b("dummy"),
        3: w.w,
        4: out,
        6: opts.add?.[1] ?? b("dummy"),
      };
      if (w.b) bind[5] = w.b;
      // The add-one of Gemma norms is already in RMSNorm.scale().
      this.#kernel(
        ops,
        nm instanceof RMSNorm ? "rms_norm" : "layer_norm",
        constants,
        bind,
        [rows, 1],
      );
    };

    // Embedding (× scale), project_in, learned positions.
    const embedDim = parts.embedTokens.embeddingDim;
    const projIn = parts.projectIn ? slot(parts.projectIn) : null;
    const embedOut = projIn ? b("e") : h;
    const embDtype = (e: Embedding) =>
      ({ f32: 0, f16: 1, bf16: 2 })[e.weight.dtype as "f32" | "f16" | "bf16"];
    for (const t of this.#tables[0]!) {
      this.#kernel(
        ops,
        "embedding",
        {
          DTYPE: embDtype(parts.embedTokens),
          DIM: embedDim,
          LDH: projIn ? roundUp(embedDim, 16) : hp,
          ROW0: t.row0,
          ROWS: t.rows,
          SCALE: c.embeddingScale,
        },
        { 0: stepBuf, 1: b("tokens"), 2: t.buffer, 3: embedOut },
        [
          Math.ceil(embedDim / 256),
          n,
        ],
      );
    }
    if (projIn) {
      if (H !== hp) {
        throw new RangeError(
          "project_in needs a hidden size that is a multiple of 16 on WebGPU",
        );
      }
      this.#matmul(ops, params, projIn, embedOut, h, n);
    }
    if (parts.embedPositions && c.positions.kind === "learned") {
      for (const t of this.#tables[1]!) {
        this.#kernel(
          ops,
          "embedding",
          {
            DTYPE: embDtype(parts.embedPositions),
            DIM: H,
            LDH: hp,
            ROW0: t.row0,
            ROWS: t.rows,
            POSITIONS: true,
            OFFSET: c.positions.offset,
            ACC: true,
          },
          { 0: stepBuf, 1: b("tokens"), 2: t.buffer, 3: h },
          [
            Math.ceil(H / 256),
            n,
          ],
        );
      }
    }

    // A sub-block: pre-norm (norm, run, post-norm, leave the delta pending)
    // or post-norm (run on the residual, then residual ← norm(residual + y)).
    const sub = (
      preNorm: boolean,
      nm: Norm,
      post: Norm | null,
      readers: GpuMatmul[],
      run: (x: GPUBuffer, y: GPUBuffer) => void,
    ) => {
      if (preNorm) {
        norm(nm, h, b("xn"), { add: pending, readers });
        run(b("xn"), b("delta"));
        if (post) {
          norm(post, b("delta"), b("delta2"), { ldx: H, ldo: H });
          pending = [b("delta2")];
        } else pending = [b("delta")];
      } else {
        if (pending.length) throw new Error("internal: a delta at a post-norm");
        run(h, b("delta"));
        norm(nm, h, other, { add: [b("delta")] });
        [h, other] = [other, h];
      }
    };

    for (const [i, layer] of parts.layers.entries()) {
      const lp = layer.parts, a = lp.attention.options;
      const at = `model.layers.${i}.self_attn`;
      const qw = a.numHeads * a.headDim, kvw = a.numKvHeads * a.headDim;
      const rope = parts.rope;
      const attention = (x: GPUBuffer, y: GPUBuffer) => {
        const p = a.projections;
        let q: GPUBuffer, k: GPUBuffer, v: GPUBuffer;
        let ldq = qw, ldk = kvw, kOff = 0, vOff = 0;
        if ("qkv" in p) {
          q = k = v = b("qkv");
          this.#matmul(ops, params, slot(`${at}.${p.qkv}`), x, q, n);
          ldq = ldk = qw + 2 * kvw;
          kOff = qw;
          vOff = qw + kvw;
        } else {
          const gpus = slot(`${at}.${p.q}`).gpus;
          if (gpus.length === 1) { // q | k | v fused at upload
            q = k = v = b("qkv");
            this.#matmul(ops, params, gpus[0]!, x, q, n);
            ldq = ldk = qw + 2 * kvw;
            kOff = qw;
            vOff = qw + kvw;
          } else {
            q = b("qkv"), k = b("k"), v = b("v");
            this.#matmul(ops, params, gpus[0]!, x, q, n);
            this.#matmul(ops, params, gpus[1]!, x, k, n);
            this.#matmul(ops, params, gpus[2]!, x, v, n);
          }
        }
        const positions = {
          ROT: rope ? rope.rotaryDim : 0,
          NEOX: rope ? rope.layout === "neox" : true,
          LDQ: ldq,
          LDK: ldk,
          LDV: ldk,
          K_OFF: kOff,
          V_OFF: vOff,
        };
        const heads = {
          NQ: a.numHeads,
          NKV: a.numKvHeads,
          HD: a.headDim,
          CTX: this.contextLength,
        };
        const scores = {
          LDO: roundUp(qw, 16),
          SCALE: a.scale,
          CAP: a.softcap ?? 0,
          WINDOW: a.slidingWindow ?? 0,
        };
        const cache = { 2: this.#caches[i]!.k, 3: this.#caches[i]!.v };
        if (n === 1) {
          // Decode: attention rotates q and the new key and appends k, v.
          this.#kernel(
            ops,
            "attention",
            { ...heads, ...scores, ...positions, ROPE: true },
            {
              0: stepBuf,
              1: q,
              ...cache,
              4: b("attn"),
              5: k,
              6: v,
              7: b("rope"),
            },
            [a.numHeads, 1],
          );
        } else {
          this.#kernel(ops, "rope_cache", { ...heads, ...positions }, {
            0: stepBuf,
            1: q,
            2: k,
            3: v,
            4: b("qr"),
            5: cache[2],
            6: cache[3],
            7: b("rope"),
          }, [a.numHeads + a.numKvHeads, n]);
          // A prefill shares each staged key/value tile among 16 queries.
          const tiled = n > GEMV_MAX_M && a.headDim % 4 === 0 &&
            a.headDim <= 128;
          this.#kernel(
            ops,
            tiled ? "attention_prefill" : "attention",
            { ...heads, ...scores },
            {
              0: stepBuf,
              1: b("qr"),
              ...cache,
              4: b("attn"),
              // The ROPE-mode bindings, unused here.
              5: b("dummy"),
              6: b("dummy"),
              7: b("dummy"),
            },
            [a.numHeads, tiled ? Math.ceil(n / 16) : n],
          );
        }
        this.#matmul(ops, params, slot(`${at}.${p.o}`), b("attn"), y, n);
      };
      const mlp = lp.mlp, mp = mlp.projections;
      const ml = `model.layers.${i}.mlp`;
      const inter = c.intermediateSize;
      const feedForward = (x: GPUBuffer, y: GPUBuffer) => {
        const act = ["silu", "gelu", "gelu_tanh", "relu"].indexOf(
          mlp.activation,
        );
        const glu = (constants: Constants, g: GPUBuffer, u: GPUBuffer) =>
          this.#kernel(
            ops,
            "glu",
            {
              ACT: act,
              DIM: inter,
              LDO: roundUp(inter, 16),
              ...constants,
            },
            { 0: stepBuf, 1: g, 2: u, 3: b("act") },
            [
              Math.ceil(roundUp(inter, 16) / 256),
              n,
            ],
          );
        let down: string;
        if ("fc1" in mp) {
          this.#matmul(ops, params, slot(`${ml}.${mp.fc1}`), x, b("gate"), n);
          glu({ GATED: false, LDG: inter, LDU: inter }, b("gate"), b("gate"));
          down = mp.fc2;
        } else if ("gateUp" in mp) {
          this.#matmul(
            ops,
            params,
            slot(`${ml}.${mp.gateUp}`),
            x,
            b("gate"),
            n,
          );
          glu(
            { GATED: true, LDG: 2 * inter, LDU: 2 * inter, U_OFF: inter },
            b("gate"),
            b("gate"),
          );
          down = mp.down;
        } else {
          const gpus = slot(`${ml}.${mp.gate}`).gpus;
          if (gpus.length === 1) { // gate | up fused at upload
            this.#matmul(ops, params, gpus[0]!, x, b("gate"), n);
            glu(
              { GATED: true, LDG: 2 * inter, LDU: 2 * inter, U_OFF: inter },
              b("gate"),
              b("gate"),
            );
          } else {
            this.#matmul(ops, params, gpus[0]!, x, b("gate"), n);
            this.#matmul(ops, params, gpus[1]!, x, b("up"), n);
            glu({ GATED: true, LDG: inter, LDU: inter }, b("gate"), b("up"));
          }
          down = mp.down;
        }
        this.#matmul(ops, params, slot(`${ml}.${down}`), b("act"), y, n);
      };
      // The matmuls that read each norm's output.
      const p0 = a.projections;
      const attnIn = slot(
        `${at}.${"qkv" in p0 ? p0.qkv : p0.q}`,
      ).gpus;
      const mlpIn = slot(
        `${ml}.${"fc1" in mp ? mp.fc1 : "gateUp" in mp ? mp.gateUp : mp.gate}`,
      ).gpus;
      if (lp.parallel) {
        // x + attn(norm(x)) + mlp(norm(x)): both deltas go to the next norm.
        norm(lp.inputNorm, h, b("xn"), {
          add: pending,
          readers: [...attnIn, ...mlpIn],
        });
        attention(b("xn"), b("delta"));
        feedForward(b("xn"), b("delta2"));
        pending = [b("delta"), b("delta2")];
      } else {
        sub(lp.preNorm, lp.inputNorm, lp.postAttentionNorm, attnIn, attention);
        sub(lp.preNorm, lp.mlpNorm, lp.postMlpNorm, mlpIn, feedForward);
      }
    }

    // Final norm (of the last row only, unless every row's logits are
    // wanted), project_out, LM head, soft-cap, sampling.
    if (mode !== "none") {
      const last = mode === "last";
      const rows = last ? 1 : n;
      let x: GPUBuffer;
      if (parts.finalNorm) {
        norm(parts.finalNorm, h, b("xf"), {
          add: pending,
          last,
          readers: parts.projectOut ? [] : slot(parts.lmHead).gpus,
        });
        x = b("xf");
      } else {
        if (pending.length) {
          throw new Error(
            "A pre-norm model without a final norm is not supported on WebGPU",
          );
        }
        if (last && n > 1) {
          ops.push({ copy: [h, 4 * (n - 1) * hp, b("xf"), 0, 4 * hp] });
          x = b("xf");
        } else x = h;
      }
      if (parts.projectOut) {
        const po = slot(parts.projectOut);
        this.#matmul(ops, params, po, x, b("proj"), rows);
        x = b("proj");
        if (po.gpus[0]!.n % 16 !== 0) {
          throw new RangeError(
            "project_out needs a width that is a multiple of 16 on WebGPU",
          );
        }
      }
      this.#matmul(ops, params, slot(parts.lmHead), x, b("logits"), rows);
      if (c.finalSoftcap !== null) {
        this.#kernel(
          ops,
          "logit_softcap",
          {
            V: c.vocabSize,
            CAP: c.finalSoftcap,
          },
          { 0: stepBuf, 1: b("logits") },
          [
            Math.ceil(c.vocabSize / 256),
            rows,
          ],
        );
      }
      if (sample) {
        this.#kernel(ops, "sample", { V: c.vocabSize }, {
          0: b("sampler"),
          1: b("logits"),
          2: b("scratch"),
          3: b("picked"),
        }, [1, 1]);
      }
    }

    // The matmuls' uniforms, one 256-byte slot per chunk dispatch, then their
    // bind groups (they name that buffer).
    let paramsBuf: GPUBuffer | null = null;
    if (params.length) {
      paramsBuf = this.#device.createBuffer({
        label: `params ${n}:${mode}`,
        size: params.length * PARAMS_ALIGN,
        usage: U.UNIFORM,
        mappedAtCreation: true,
      });
      const words = new Uint32Array(paramsBuf.getMappedRange());
      params.forEach((p, i) => words.set(p, (i * PARAMS_ALIGN) / 4));
      paramsBuf.unmap();
    }
    const resolved: Op[] = ops.map((op) => {
      if (!("slot" in op)) return op;
      const uniform = {
        binding: 5,
        resource: {
          buffer: paramsBuf!,
          offset: op.slot * PARAMS_ALIGN,
          size: 32,
        },
      };
      return {
        pipeline: op.pipeline,
        group: this.#device.createBindGroup({
          layout: op.pipeline.getBindGroupLayout(0),
          entries: [...op.entries, uniform],
        }),
        grid: op.grid,
      };
    });
    return {
      ops: resolved,
      params: paramsBuf,
      dispatches: resolved.filter((o) => "pipeline" in o).length,
      checked: false,
    };
  }

  /** A greedy decode step, from the ids run ahead or a new batch of them. */
  async #greedyAhead(token: number, pos: number): Promise<number> {
    let a = this.#ahead;
    const continues = a !== null && a.pos === pos && a.token === token;
    if (!continues || a!.ids.length === 0) {
      const k = Math.min(
        continues ? Math.min(2 * a!.k, MAX_AHEAD) : 1,
        this.contextLength - pos,
      );
      const ids = await this.#runAhead(token, pos, k);
      a = this.#ahead = { pos, token, ids, k };
    }
    const id = a!.ids.shift()!;
    this.#filled = pos + 1;
    if (id < 0) {
      this.#ahead = null;
      throw new Error(
        `The model produced NaN logits at position ${pos}: its weights or activations are not finite`,
      );
    }
    a!.pos = pos + 1;
    a!.token = id;
    return id;
  }

  /**
   * k greedy decode steps from `token` at `pos` in one submission: each
   * step's position comes from a prepared table, its sampled id is copied
   * into the token buffer for the next; returns the k ids (−1 for a step
   * whose logits held NaN).
   */
  async #runAhead(token: number, pos: number, k: number): Promise<number[]> {
    const d = this.#device;
    const plan = this.#plan(1, "last", true);
    const sp = new Float32Array(4); // temperature 0: argmax
    d.queue.writeBuffer(this.#b("sampler"), 0, sp);
    const steps = new Uint32Array(4 * k);
    for (let t = 0; t < k; t++) steps.set([pos + t, 1, 1, 0], 4 * t);
    d.queue.writeBuffer(this.#b("aheadSteps"), 0, steps);
    d.queue.writeBuffer(this.#b("tokens"), 0, Uint32Array.of(token));
    const check = !plan.checked;
    if (check) d.pushErrorScope("validation");
    const enc = d.createCommandEncoder();
    const [step, picked, tokens, out] = [
      this.#b("step"),
      this.#b("picked"),
      this.#b("tokens"),
      this.#b("aheadIds"),
    ];
    for (let t = 0; t < k; t++) {
      enc.copyBufferToBuffer(this.#b("aheadSteps"), 16 * t, step, 0, 16);
      this.#encode(enc, plan, t === 0, t === k - 1);
      enc.copyBufferToBuffer(picked, 0, tokens, 0, 4);
      enc.copyBufferToBuffer(picked, 0, out, 8 * t, 8);
    }
    const rb = this.#b("readback");
    enc.copyBufferToBuffer(out, 0, rb, 0, 8 * k);
    const stampAt = 8 * k;
    const q = this.#query;
    if (q) {
      enc.resolveQuerySet(q, 0, 2, this.#b("stamps"), 0);
      enc.copyBufferToBuffer(this.#b("stamps"), 0, rb, stampAt, 16);
    }
    d.queue.submit([enc.finish()]);
    if (check) {
      const invalid = await d.popErrorScope();
      if (invalid) {
        throw new Error(`A WebGPU engine step failed: ${invalid.message}`);
      }
      plan.checked = true;
    }
    const readBytes = stampAt + (q ? 16 : 0);
    await rb.mapAsync(GPUMapMode.READ, 0, readBytes);
    const bytes = rb.getMappedRange(0, readBytes);
    const words = new Uint32Array(bytes, 0, 2 * k);
    const ids = Array.from(
      { length: k },
      (_, t) => words[2 * t + 1] ? -1 : words[2 * t]!,
    );
    if (q) {
      const ts = new BigUint64Array(bytes, stampAt, 2);
      const ms = Number(ts[1]! - ts[0]!) / 1e6 / k;
      if (ms > 0) {
        this.#decodeMs.push(ms);
        if (this.#decodeMs.length > 64) this.#decodeMs.shift();
      }
    }
    rb.unmap();
    return ids;
  }

  /** Serialises calls: one step at a time owns the buffers. */
  #exclusive<T>(run: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(run, run);
    this.#queue = next.catch(() => {});
    return next;
  }

  /** See {@linkcode Engine.step}. */
  step(
    tokens: readonly number[],
    pos: number,
    rows: "last" | "all",
  ): Promise<Float32Array> {
    return this.#exclusive(async () => {
      this.#check(tokens, pos);
      this.#ahead = null;
      await this.#syncSlots();
      const v = this.model.config.vocabSize;
      const n = tokens.length;
      const out = new Float32Array(rows === "last" ? v : n * v);
      const chunk = rows === "all" ? this.#chunkAll : this.#chunk;
      for (let i0 = 0; i0 < n; i0 += chunk) {
        const part = tokens.slice(i0, i0 + chunk);
        const lastChunk = i0 + chunk >= n;
        const mode: Mode = rows === "all" ? "all" : lastChunk ? "last" : "none";
        const bytes = await this.#run(part, pos + i0, mode, false);
        if (mode === "all") out.set(new Float32Array(bytes), i0 * v);
        if (mode === "last") out.set(new Float32Array(bytes));
      }
      this.#filled = pos + n;
      checkLogits(out, v, rows === "last" ? pos + n - 1 : pos);
      return out;
    });
  }

  /** See {@linkcode Engine.stepAndSample}: the sampling runs on the GPU, 4 bytes come back. */
  stepAndSample(
    tokens: readonly number[],
    pos: number,
    sampler: SamplerParams,
    u: number,
  ): Promise<number> {
    return this.#exclusive(async () => {
      this.#check(tokens, pos);
      checkSamplerParams(sampler);
      if (sampler.temperature > 0 && !(u >= 0 && u < 1)) {
        throw new RangeError(`u must be in [0, 1), got ${u}`);
      }
      if (await this.#syncSlots()) this.#ahead = null;
      if (sampler.temperature === 0 && tokens.length === 1) {
        return await this.#greedyAhead(tokens[0]!, pos);
      }
      this.#ahead = null;
      const sp = new ArrayBuffer(16);
      // u below 1 in f32 too, so that some kept token's mass exceeds it.
      new Float32Array(sp).set([
        sampler.temperature,
        0,
        sampler.topP,
        Math.min(u, 1 - 2 ** -24),
      ]);
      new Uint32Array(sp)[1] = sampler.topK;
      this.#device.queue.writeBuffer(this.#b("sampler"), 0, sp);
      const n = tokens.length;
      for (let i0 = 0; i0 + this.#chunk < n; i0 += this.#chunk) {
        await this.#run(
          tokens.slice(i0, i0 + this.#chunk),
          pos + i0,
          "none",
          false,
        );
      }
      const i0 = Math.floor((n - 1) / this.#chunk) * this.#chunk;
      const bytes = await this.#run(tokens.slice(i0), pos + i0, "last", true);
      const [id, nan] = new Uint32Array(bytes);
      this.#filled = pos + n;
      if (nan) {
        throw new Error(
          `The model produced NaN logits at position ${
            pos + n - 1
          }: its weights or activations are not finite`,
        );
      }
      return id!;
    });
  }

  #check(tokens: readonly number[], pos: number): void {
    if (this.#disposed) throw new Error("The WebGPU engine was disposed");
    checkStep(tokens, pos, this.#filled, this.contextLength);
    const v = this.model.config.vocabSize;
    for (const t of tokens) {
      if (!Number.isInteger(t) || t < 0 || t >= v) {
        throw new RangeError(
          `Token id ${t} is out of range: the table has ${v} rows`,
        );
      }
    }
    this.#filled = Math.min(this.#filled, pos);
  }

  /**
   * Records `plan`'s passes and copies into `enc`; the timestamps (where the
   * adapter has them) open the first pass when `first` and close the last
   * when `last`, so several plans in one submission are timed together.
   */
  #encode(
    enc: GPUCommandEncoder,
    plan: Plan,
    first: boolean,
    last: boolean,
  ): void {
    const q = this.#query;
    // Compute passes between the copies.
    const copies = plan.ops.filter((o) => "copy" in o).length;
    let pass: GPUComputePassEncoder | null = null;
    let passes = 0;
    for (const op of plan.ops) {
      if ("copy" in op) {
        pass?.end();
        pass = null;
        enc.copyBufferToBuffer(...op.copy);
        continue;
      }
      if (!pass) {
        const open = first && passes === 0, close = last && passes === copies;
        passes++;
        pass = enc.beginComputePass(
          q && (open || close)
            ? {
              timestampWrites: {
                querySet: q,
                ...(open ? { beginningOfPassWriteIndex: 0 } : {}),
                ...(close ? { endOfPassWriteIndex: 1 } : {}),
              },
            }
            : {},
        );
      }
      pass.setPipeline(op.pipeline);
      pass.setBindGroup(0, op.group);
      pass.dispatchWorkgroups(op.grid[0], op.grid[1]);
    }
    (pass as GPUComputePassEncoder | null)?.end();
  }

  /** Runs one plan and reads back its result: logits rows, or (id, NaN flag). */
  async #run(
    tokens: readonly number[],
    pos: number,
    mode: Mode,
    sample: boolean,
  ): Promise<ArrayBuffer> {
    const d = this.#device;
    const n = tokens.length;
    const plan = this.#plan(n, mode, sample);
    const v = this.model.config.vocabSize;
    d.queue.writeBuffer(
      this.#b("step"),
      0,
      new Uint32Array([pos, n, mode === "all" ? n : 1, 0]),
    );
    d.queue.writeBuffer(this.#b("tokens"), 0, Uint32Array.from(tokens));
    const resultBytes = mode === "none"
      ? 0
      : sample
      ? 8
      : 4 * v * (mode === "all" ? n : 1);
    const stampAt = roundUp(resultBytes, 8);
    const q = this.#query;
    // The first run of a plan is checked; its replays submit the same work.
    const check = !plan.checked;
    if (check) d.pushErrorScope("validation");
    const enc = d.createCommandEncoder();
    this.#encode(enc, plan, true, true);
    const rb = this.#b("readback");
    if (resultBytes) {
      enc.copyBufferToBuffer(
        sample ? this.#b("picked") : this.#b("logits"),
        0,
        rb,
        0,
        roundUp(resultBytes, 4),
      );
    }
    if (q) {
      enc.resolveQuerySet(q, 0, 2, this.#b("stamps"), 0);
      enc.copyBufferToBuffer(this.#b("stamps"), 0, rb, stampAt, 16);
    }
    d.queue.submit([enc.finish()]);
    if (check) {
      const invalid = await d.popErrorScope();
      if (invalid) {
        throw new Error(`A WebGPU engine step failed: ${invalid.message}`);
      }
      plan.checked = true;
    }
    const readBytes = stampAt + (q ? 16 : 0);
    if (readBytes === 0) {
      await d.queue.onSubmittedWorkDone();
      return new ArrayBuffer(0);
    }
    await rb.mapAsync(GPUMapMode.READ, 0, readBytes);
    const bytes = rb.getMappedRange(0, readBytes);
    const out = bytes.slice(0, resultBytes);
    if (q) {
      const t = new BigUint64Array(bytes, stampAt, 2);
      const ms = Number(t[1]! - t[0]!) / 1e6;
      if (n === 1 && ms > 0) {
        this.#decodeMs.push(ms);
        if (this.#decodeMs.length > 64) this.#decodeMs.shift();
      }
    }
    rb.unmap();
    return out;
  }

  /** See {@linkcode Engine.reset}. */
  reset(): void {
    this.#filled = 0;
    this.#ahead = null;
  }

  /** Frees the device and every buffer; the engine cannot step afterwards. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const s of this.#slots) for (const g of s.gpus) destroyMatmul(g);
    for (const b of this.#buffers.values()) b.destroy();
    for (const b of this.#owned) b.destroy();
    this.#dropPlans();
    this.#query?.destroy();
    this.#backend.destroy();
  }

  /**
   * Dispatches of one decode step (n = 1, sampled on the GPU), its GPU time
   * (median of recent decode steps, from timestamp queries where the
   * adapter has them) and the weight bytes it reads.
   */
  stats(): EngineStats {
    const ms = [...this.#decodeMs].sort((a, b) => a - b);
    return {
      dispatchesPerToken: this.#plan(1, "last", true).dispatches,
      ...(ms.length ? { gpuMsPerToken: ms[ms.length >> 1]! } : {}),
      weightBytesPerToken: this.#slots.reduce(
        (s, x) => s + x.gpus.reduce((t, g) => t + g.weightBytes, 0),
        this.#embedRowBytes,
      ),
    };
  }
}

/**
 * GPU row → layer row of CodeGen's fused qkv, whose output is `mp` chunks of
 * (q, v, k) slices: the GPU copy holds plain q | k | v.
 */
function mpRowOrder(width: number, mp: number): Int32Array {
  const local = width / mp;
  const order = new Int32Array(3 * width);
  const slotOf = [0, 2, 1]; // q, k, v → their slice within a chunk
  for (let part = 0; part < 3; part++) {
    for (let w = 0; w < width; w++) {
      const c = Math.floor(w / local);
      order[part * width + w] = c * 3 * local + slotOf[part]! * local +
        (w % local);
    }
  }
  return order;
}
