/**
 * The one error type of the safetensors reader and writer.
 *
 * @module
 */

/**
 * What went wrong, named after the variants of the reference
 * implementation's `SafeTensorError` where one exists (`InvalidDtype`,
 * `InvalidShape`, `DuplicateTensor`, `InvalidMetadata` name cases it folds
 * into JSON errors).
 */
export type SafetensorsErrorKind =
  | "HeaderTooSmall"
  | "HeaderTooLarge"
  | "InvalidHeaderLength"
  | "InvalidHeader"
  | "InvalidHeaderDeserialization"
  | "InvalidDtype"
  | "InvalidShape"
  | "InvalidOffset"
  | "TensorInvalidInfo"
  | "DuplicateTensor"
  | "MetadataIncompleteBuffer"
  | "InvalidMetadata"
  | "ValidationOverflow"
  | "TensorNotFound"
  | "Io";

/**
 * A malformed safetensors file, a missing tensor, an I/O failure or an entry
 * the writer cannot store. The message is one line:
 * `<file>: [tensor "<name>": ]<problem>`.
 *
 * @example Tell a bad file from other failures
 * ```ts
 * import { SafetensorsError } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const err = new SafetensorsError("InvalidDtype", "m.safetensors", 'unknown dtype "F33"', "w");
 * assert.equal(err.message, 'm.safetensors: tensor "w": unknown dtype "F33"');
 * assert.equal(err.kind, "InvalidDtype");
 * ```
 */
export class SafetensorsError extends Error {
  /** Which rule the file broke, or `Io`/`TensorNotFound`. */
  readonly kind: SafetensorsErrorKind;
  /** The file's path as given to the reader or writer. */
  readonly file: string;
  /** The tensor the problem concerns, where there is one. */
  readonly tensor?: string;
  /** The problem alone, without the file and tensor prefix. */
  readonly detail: string;

  /** Builds the error; `tensor` is quoted into the message when given. */
  constructor(
    kind: SafetensorsErrorKind,
    file: string,
    detail: string,
    tensor?: string,
    options?: ErrorOptions,
  ) {
    // A hostile name can be megabytes long; the message stays one short line.
    const shown = tensor !== undefined && tensor.length > 80
      ? `${tensor.slice(0, 77)}...`
      : tensor;
    const where = shown === undefined
      ? ""
      : `tensor ${JSON.stringify(shown)}: `;
    super(`${file}: ${where}${detail}`, options);
    this.name = "SafetensorsError";
    this.kind = kind;
    this.file = file;
    if (tensor !== undefined) this.tensor = tensor;
    this.detail = detail;
  }
}
