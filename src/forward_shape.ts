// Shared argument handling of every layer's forward(): [..., in] inputs.

import { numel, type Tensor } from "./tensor.ts";

/** Checks `x` is [..., inFeatures] and returns the number of rows M. */
export function rowsOf(x: Tensor, inFeatures: number, layer: string): number {
  const last = x.shape[x.shape.length - 1];
  if (x.ndim === 0 || last !== inFeatures) {
    throw new RangeError(
      `${layer}.forward() expects input of shape [..., ${inFeatures}], got [${
        x.shape.join(", ")
      }]`,
    );
  }
  return numel(x.shape.slice(0, -1));
}

/** The output shape [..., outFeatures] for an input shape [..., in]. */
export function outShape(x: Tensor, outFeatures: number): number[] {
  return [...x.shape.slice(0, -1), outFeatures];
}
