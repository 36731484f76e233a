/**
 * The hook for output formats: how a quantized Linear is stored, what the
 * checkpoint says about its quantization, and how to read it back. TinyQ's
 * own layout is {@linkcode tinyqFormat}; another layout (compressed-tensors,
 * optimum-quanto) is one more object implementing {@linkcode CheckpointFormat},
 * with no change to the checkpoint writer or the CLI.
 *
 * @module
 */

import type { DType } from "../../dtype.ts";
import type { Tensor } from "../../tensor.ts";

/** The description of one output tensor, known before any data is computed. */
export interface TensorSpec {
  /** Full tensor name in the file (`model.layers.0.mlp.up_proj.int8_weights`). */
  readonly name: string;
  /** Element type. */
  readonly dtype: DType;
  /** Dimensions. */
  readonly shape: readonly number[];
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
  ): TensorSpec[];
  /**
   * The next bytes of each tensor of {@linkcode CheckpointFormat.linearTensors}
   * (same order) for one block of rows; blocks come in row order and together
   * must produce exactly each tensor's size.
   */
  encodeLinear(record: QuantizedRowsRecord): Uint8Array[];
  /** Entries added to every shard's `__metadata__`. */
  fileMetadata(summary: QuantizationSummary): Record<string, string>;
  /** The `quantization_config` block of `config.json`. */
  configBlock(summary: QuantizationSummary): Record<string, unknown>;
  /** Files written beside the shards (name → text), e.g. a quantization map. */
  extraFiles(summary: QuantizationSummary): Record<string, string>;
  /** The summary if this format wrote the checkpoint, else null. */
  detect(
    metadata: Readonly<Record<string, string>> | null,
    config: Readonly<Record<string, unknown>> | null,
  ): QuantizationSummary | null;
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
}
