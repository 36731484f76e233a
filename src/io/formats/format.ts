/**
 * The hook for output formats: how a quantized Linear is stored, what the
 * checkpoint says about its quantization, and how to read it back. TinyQ's
 * own layout is {@linkcode tinyqFormat}; another layout (compressed-tensors,
 * optimum-quanto) is one more object implementing {@linkcode CheckpointFormat},
 * with no change to the checkpoint writer or the CLI.
 *
 * @module
 */

import { type DType, DTYPE_SIZE } from "../../dtype.ts";
import type { Tensor } from "../../tensor.ts";
import type { Int4Weight } from "../../backend/backend.ts";
import type { WeightScheme } from "../../quant/schemes.ts";

/** The description of one output tensor, known before any data is computed. */
export interface TensorSpec {
  /** Full tensor name in the file (`model.layers.0.mlp.up_proj.int8_weights`). */
  readonly name: string;
  /** Element type. */
  readonly dtype: DType;
  /** Dimensions. */
  readonly shape: readonly number[];
}

/** Bytes of a tensor described by `spec`. */
export function specBytes(spec: TensorSpec): number {
  let n = DTYPE_SIZE[spec.dtype];
  for (const d of spec.shape) n *= d;
  return n;
}

/**
 * A block of output rows of a quantized Linear at `path`: rows
 * `[rowStart, rowStart + rows)` of the [out, in] weight, in Linear orientation.
 */
export interface QuantizedRowsRecord {
  /** Dotted module path. */
  readonly path: string;
  /** Output features (all rows of the layer). */
  readonly outFeatures: number;
  /** Input features (columns). */
  readonly inFeatures: number;
  /** First row of this block. */
  readonly rowStart: number;
  /** Rows in this block. */
  readonly rows: number;
  /** Int8 values, [rows, inFeatures] row-major. */
  readonly q: Int8Array;
  /** One f32 scale per row of the block. */
  readonly scales: Float32Array;
  /** Dtype of the float weight it came from. */
  readonly sourceDtype: DType;
  /** One zero point per row of the block (asymmetric int8), or null/absent. */
  readonly zeroPoints?: Int8Array | null;
  /** The scheme of `linearTensors` (absent: int8 per-channel symmetric). */
  readonly scheme?: WeightScheme;
}

export { INT8_SYMMETRIC, type WeightScheme } from "../../quant/schemes.ts";

/**
 * A block of output rows of a group-wise 4-bit Linear at `path`: rows
 * `[rowStart, rowStart + rows)` of the [out, in] weight, in Linear
 * orientation, packed as in {@linkcode Int4Weight}.
 */
export interface Int4RowsRecord {
  /** Dotted module path. */
  readonly path: string;
  /** Output features (all rows of the layer). */
  readonly outFeatures: number;
  /** Input features (columns). */
  readonly inFeatures: number;
  /** First row of this block. */
  readonly rowStart: number;
  /** Rows in this block. */
  readonly rows: number;
  /** Codes, two per byte (element 2j low nibble), [rows, inFeatures / 2]. */
  readonly packed: Uint8Array;
  /** One f32 scale per group, [rows, inFeatures / groupSize]. */
  readonly scales: Float32Array;
  /** One zero point (0–15) per group when asymmetric, else null. */
  readonly zeroPoints: Uint8Array | null;
  /** Inputs per group. */
  readonly groupSize: number;
  /** Dtype of the float weight it came from. */
  readonly sourceDtype: DType;
}

/** A whole quantized Linear read back from a file. */
export interface DecodedLinear {
  /** Int8 values, [out, in] row-major. */
  readonly q: Int8Array;
  /** One f32 scale per output row. */
  readonly scales: Float32Array;
  /** One zero point per row (asymmetric), or null. */
  readonly zeroPoints: Int8Array | null;
  /** Output features. */
  readonly outFeatures: number;
  /** Input features. */
  readonly inFeatures: number;
}

/** What was quantized, recorded in the files and in `config.json`. */
export interface QuantizationSummary {
  /** Library that wrote it (`"tinyq"`). */
  readonly library: string;
  /** Library version. */
  readonly version: string;
  /** Quantization method (`"w8a16"`, `"w8a32"`). */
  readonly method: string;
  /** Bits per weight value. */
  readonly bits: number;
  /** `"per-channel"` (one scale per output row). */
  readonly granularity: string;
  /** Symmetric (no zero points). */
  readonly symmetric: boolean;
  /** Dotted paths of the quantized Linear modules. */
  readonly modules: readonly string[];
  /** Linear modules left in float by `--exclude`. */
  readonly excluded: readonly string[];
  /** Quantized modules whose original weight was stored [in, out] (GPT-2 Conv1D). */
  readonly transposed: readonly string[];
  /** Dtype of the original Linear weights when they all share one. */
  readonly weightDtype?: DType;
  /** Inputs per group of group-wise (4-bit) weights; null/absent for per-channel. */
  readonly groupSize?: number | null;
  /** What happens to activations at forward time (`"int8 dynamic per-token"` for W8A8). */
  readonly activations?: string;
}

/**
 * An output format. The writer asks {@linkcode CheckpointFormat.linearTensors}
 * for the tensors of each quantized Linear before writing a header, then
 * feeds {@linkcode CheckpointFormat.encodeLinear} blocks of rows in order and
 * appends what it returns to each tensor's bytes.
 */
export interface CheckpointFormat {
  /** Format name (`"tinyq"`). */
  readonly name: string;
  /** The tensors that stand for a quantized Linear at `path` (its bias excluded: it passes through). */
  linearTensors(
    path: string,
    outFeatures: number,
    inFeatures: number,
    sourceDtype: DType,
    scheme?: WeightScheme,
  ): TensorSpec[];
  /**
   * The next bytes of each tensor of {@linkcode CheckpointFormat.linearTensors}
   * (same order) for one block of rows; blocks come in row order and together
   * must produce exactly each tensor's size.
   */
  encodeLinear(record: QuantizedRowsRecord): Uint8Array[];
  /**
   * As {@linkcode CheckpointFormat.encodeLinear}, for 4-bit group-wise
   * weights; a format without it does not store them.
   */
  encodeInt4Linear?(record: Int4RowsRecord): Uint8Array[];
  /** The schemes this format stores, or absent for int8 symmetric only. */
  supports?(scheme: WeightScheme): boolean;
  /** Entries added to every shard's `__metadata__`. */
  fileMetadata(summary: QuantizationSummary): Record<string, string>;
  /** The `quantization_config` block of `config.json`. */
  configBlock(summary: QuantizationSummary): Record<string, unknown>;
  /** Files written beside the shards (name → text), e.g. a quantization map. */
  extraFiles(summary: QuantizationSummary): Record<string, string>;
  /**
   * The summary if this format wrote the checkpoint, else null. `context`
   * (given by `Checkpoint.open`) adds the tensor headers and the text of
   * {@linkcode CheckpointFormat.detectFiles}, for formats that need them.
   */
  detect(
    metadata: Readonly<Record<string, string>> | null,
    config: Readonly<Record<string, unknown>> | null,
    context?: DetectContext,
  ): QuantizationSummary | null;
  /** Files beside the shards that `detect` reads (`quanto_qmap.json`). */
  readonly detectFiles?: readonly string[];
  /** The names of the stored tensors of a quantized Linear at `path`. */
  storedNames(path: string): string[];
  /**
   * Reads a quantized Linear back; `read` loads a tensor by full name, or
   * gives null when the checkpoint has none of that name.
   */
  decodeLinear(
    path: string,
    read: (name: string) => Promise<Tensor | null>,
  ): Promise<DecodedLinear>;
  /** Reads a 4-bit group-wise Linear back (formats that store them). */
  decodeInt4Linear?(
    path: string,
    read: (name: string) => Promise<Tensor | null>,
  ): Promise<Int4Weight>;
  /**
   * [out, in] of the quantized Linear at `path`, for a format whose first
   * stored tensor does not have that shape; `read` loads a small tensor.
   * Absent: the shape of the first of `storedNames` the checkpoint holds.
   */
  linearShape?(
    path: string,
    read: (name: string) => Promise<Tensor | null>,
    tensors?: DetectContext["tensors"],
  ): Promise<[number, number]>;
  /**
   * Why the Linear `layer` must stay in float in this format (its loaders
   * could not read it quantized), or null. Absent: every Linear can be held.
   */
  keepFloat?(layer: FormatLayer): string | null;
  /**
   * What may stop the engines that load this format from serving the
   * checkpoint `summary` describes; `layers` gives the quantized layers'
   * shapes. Absent: nothing to warn about.
   */
  warnings?(
    summary: QuantizationSummary,
    layers: readonly FormatLayer[],
  ): FormatWarning[];
  /**
   * The output `config.json` adjusted for this format's loaders (its
   * `quantization_config` already set). Absent: unchanged.
   */
  updateConfig?(
    config: Readonly<Record<string, unknown>>,
    summary: QuantizationSummary,
  ): Record<string, unknown>;
}

/** What a reader knows of a checkpoint beyond metadata and config. */
export interface DetectContext {
  /** Every tensor: name → dtype and shape, from the headers. */
  readonly tensors: ReadonlyMap<
    string,
    { readonly dtype: DType; readonly shape: readonly number[] }
  >;
  /** The text of each of the format's `detectFiles` found beside the shards. */
  readonly files: Readonly<Record<string, string>>;
}

/** A Linear layer as a format sees it: path and Linear-orientation shape. */
export interface FormatLayer {
  /** Dotted module path. */
  readonly path: string;
  /** Output features (rows). */
  readonly outFeatures: number;
  /** Input features (columns). */
  readonly inFeatures: number;
  /** Weight stored [in, out] in the float checkpoint (GPT-2 Conv1D). */
  readonly transposed?: boolean;
}

/** Something about a layer that may stop an engine from loading a format. */
export interface FormatWarning {
  /** Dotted module path. */
  readonly path: string;
  /** One line saying what and why. */
  readonly message: string;
}
