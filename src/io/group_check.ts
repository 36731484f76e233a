/**
 * The up-front check of 4-bit group sizes: a Linear whose input size the
 * group size does not divide is kept in float, and each such layer is named
 * with why and the group sizes that would fit it.
 *
 * @module
 */

import { INT4_GROUP_SIZES } from "../quant/int4.ts";
import { CheckpointError } from "./checkpoint_error.ts";

/** A Linear about to be quantized: its dotted path and input features. */
export interface PlannedLinear {
  /** Dotted module path. */
  readonly path: string;
  /** Input features (columns of the [out, in] weight). */
  readonly inFeatures: number;
}

/** A layer 4-bit groups cannot split, kept in float, and why. */
export interface GroupMisfit {
  /** Dotted module path. */
  readonly path: string;
  /** Why, in words, with the group sizes that would fit it. */
  readonly reason: string;
}

/**
 * Splits `layers` into those whose input size `groupSize` divides and those
 * it does not (kept in float: a checkpoint holds one scheme). Throws a
 * {@linkcode CheckpointError} for a group size TinyQ does not support.
 * (optimum-quanto lowers the group size of such a layer instead, 128 → 96 →
 * 64 → 32; TinyQ keeps one group size per checkpoint and says which layers
 * stayed in float.)
 */
export function splitByGroupSize<T extends PlannedLinear>(
  file: string,
  layers: Iterable<T>,
  groupSize: number,
): { fits: T[]; misfits: GroupMisfit[] } {
  if (!(INT4_GROUP_SIZES as readonly number[]).includes(groupSize)) {
    throw new CheckpointError(
      file,
      `group size ${groupSize} is not supported; use ${
        INT4_GROUP_SIZES.join(", ")
      }`,
    );
  }
  const fits: T[] = [];
  const misfits: GroupMisfit[] = [];
  for (const l of layers) {
    if (l.inFeatures % groupSize === 0) {
      fits.push(l);
      continue;
    }
    const ok = INT4_GROUP_SIZES.filter((g) => l.inFeatures % g === 0);
    misfits.push({
      path: l.path,
      reason:
        `its ${l.inFeatures} inputs are not a multiple of the 4-bit group size ${groupSize}; ${
          ok.length
            ? `--group-size ${ok.join(" or ")} would fit it`
            : `no supported group size (${INT4_GROUP_SIZES.join(", ")}) fits it`
        }`,
    });
  }
  return { fits, misfits };
}
