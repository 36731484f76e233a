/**
 * The up-front check of 4-bit group sizes: every Linear about to be
 * quantized group-wise must have an input size the group size divides, and
 * the first that does not stops the job before anything is written, with an
 * error naming the tensor, both sizes and the two ways out.
 *
 * @module
 */

import { memberName } from "../_member_name.ts";
import { INT4_GROUP_SIZES } from "../quant/int4.ts";
import { CheckpointError } from "./_checkpoint_error.ts";

/** A Linear about to be quantized: its dotted path and input features. */
export interface PlannedLinear {
  /** Dotted module path. */
  readonly path: string;
  /** Input features (columns of the [out, in] weight). */
  readonly inFeatures: number;
}

/**
 * Throws a {@linkcode CheckpointError} for the first layer whose input size
 * `groupSize` does not divide (or for a group size TinyQ does not support).
 */
export function checkGroupSizes(
  file: string,
  layers: Iterable<PlannedLinear>,
  groupSize: number,
): void {
  if (!(INT4_GROUP_SIZES as readonly number[]).includes(groupSize)) {
    throw new CheckpointError(
      file,
      `group size ${groupSize} is not supported; use ${
        INT4_GROUP_SIZES.join(", ")
      }`,
    );
  }
  for (const l of layers) {
    if (l.inFeatures % groupSize === 0) continue;
    const fits = INT4_GROUP_SIZES.filter((g) => l.inFeatures % g === 0);
    throw new CheckpointError(
      file,
      `${l.inFeatures} input features are not a multiple of the group size ${groupSize}; ${
        fits.length
          ? `use a smaller group (--group-size ${fits.join(" or ")}) or`
          : `no supported group size (${
            INT4_GROUP_SIZES.join(", ")
          }) divides it:`
      } leave the layer in float (--exclude ${
        l.path === "" ? "weight" : l.path
      })`,
      memberName(l.path, "weight"),
    );
  }
}
