/**
 * TinyQ used as a library from another Deno project: the program the
 * README's "Using TinyQ from your own project" section shows, run by the
 * tests from a fresh project that links this checkout.
 *
 * @module
 */

import {
  Linear,
  Module,
  Quantizer,
  Tensor,
  type W8A16LinearLayer,
} from "@tinyq/tinyq";

const model = new Module();
const fc = new Linear(4, 2);
fc.weight = new Tensor(
  new Float32Array([0.5, -1, 0.25, 0, 1, 1, -1, 0.125]),
  [2, 4],
);
model.setChild("fc", fc);
model.setChild("lm_head", new Linear(2, 8));

await new Quantizer(model).quantize("w8a16", ["lm_head"]);
const layer = model.getChild("fc") as W8A16LinearLayer;
console.log(`int8 weights: ${[...layer.int8Weights.data].join(", ")}`);
const y = await layer.forward(
  new Tensor(new Float16Array([1, 1, 1, 1]), [1, 4]),
);
console.log(
  `y (${y.dtype}): ${[...y.data].map((v) => v.toFixed(3)).join(", ")}`,
);
