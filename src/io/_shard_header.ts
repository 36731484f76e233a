/**
 * The layout of a safetensors shard before any tensor is computed: the order
 * tensors take in the file ({@linkcode layoutOrder}) and the header that
 * records them ({@linkcode encodeHeader}).
 *
 * @module
 */

import { DTYPE_SIZE } from "../dtype.ts";
import { safetensorsDtypeName } from "./safetensors.ts";
import { specBytes, type TensorSpec } from "./formats/format.ts";

/** Builds the 8-byte length plus the space-padded JSON header. */
export function encodeHeader(
  specs: readonly TensorSpec[],
  offsets: readonly number[],
  metadata: ReadonlyMap<string, string>,
): Uint8Array {
  const meta = [...metadata].map(([k, v]) =>
    `${JSON.stringify(k)}:${JSON.stringify(v)}`
  );
  const parts = [`{"__metadata__":{${meta.join(",")}}`];
  specs.forEach((s, i) => {
    const info = {
      dtype: safetensorsDtypeName(s.dtype),
      shape: s.shape,
      data_offsets: [offsets[i]!, offsets[i]! + specBytes(s)],
    };
    parts.push(`,${JSON.stringify(s.name)}:${JSON.stringify(info)}`);
  });
  parts.push("}");
  const json = new TextEncoder().encode(parts.join(""));
  const n = Math.ceil(json.byteLength / 8) * 8;
  const out = new Uint8Array(8 + n).fill(0x20, 8 + json.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(n), true);
  out.set(json, 8);
  return out;
}

/**
 * The order tensors take in the file: by element size, largest first (the
 * reference writer's rule, which keeps every offset aligned), input order
 * within one size.
 */
export function layoutOrder(specs: readonly TensorSpec[]): TensorSpec[] {
  return specs.map((s, i) => [s, i] as const)
    .sort((a, b) =>
      DTYPE_SIZE[b[0].dtype] - DTYPE_SIZE[a[0].dtype] || a[1] - b[1]
    )
    .map(([s]) => s);
}
