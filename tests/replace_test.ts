import assert from "node:assert/strict";
import fc from "fast-check";
import {
  excludeMatcher,
  Linear,
  Module,
  parseQuantMethod,
  Quantizer,
  replaceLinearWithTargetAndQuantize,
  Tensor,
  W8A16LinearLayer,
  W8A32LinearLayer,
} from "../mod.ts";

/** A Llama-shaped toy: model.layers.{i}.{self_attn,mlp}.*_proj and lm_head. */
function toyModel(layers: number): Module {
  const root = new Module();
  const model = new Module();
  root.setChild("model", model);
  model.setTensor("embed", new Tensor(new Float32Array(16), [4, 4]));
  const list = new Module();
  model.setChild("layers", list);
  for (let i = 0; i < layers; i++) {
    const block = new Module();
    const attn = new Module();
    const mlp = new Module();
    for (const p of ["q_proj", "k_proj"]) attn.setChild(p, new Linear(4, 4));
    for (const p of ["up_proj", "down_proj"]) {
      mlp.setChild(p, new Linear(4, 4, { bias: false }));
    }
    block.setChild("self_attn", attn);
    block.setChild("mlp", mlp);
    list.setChild(String(i), block);
  }
  root.setChild("lm_head", new Linear(4, 8, { bias: false }));
  return root;
}

Deno.test("Module.namedModules() walks depth first with dotted paths", () => {
  const names = [...toyModel(1).namedModules()].map(([n]) => n);
  assert.deepEqual(names, [
    "",
    "model",
    "model.layers",
    "model.layers.0",
    "model.layers.0.self_attn",
    "model.layers.0.self_attn.q_proj",
    "model.layers.0.self_attn.k_proj",
    "model.layers.0.mlp",
    "model.layers.0.mlp.up_proj",
    "model.layers.0.mlp.down_proj",
    "lm_head",
  ]);
});

Deno.test("Module.namedTensors() lists tensors in state_dict order and skips absent ones", () => {
  const names = [...toyModel(1).namedTensors()].map(([n]) => n);
  assert.deepEqual(names.slice(0, 4), [
    "model.embed",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.q_proj.bias",
    "model.layers.0.self_attn.k_proj.weight",
  ]);
  assert.ok(!names.includes("model.layers.0.mlp.up_proj.bias"));
  assert.ok(names.includes("lm_head.weight"));
});

Deno.test("Module.setChild() replaces in place and rejects dotted names", () => {
  const root = toyModel(1);
  const before = [...root.namedChildren()].map(([n]) => n);
  root.setChild("model", new Module());
  assert.deepEqual([...root.namedChildren()].map(([n]) => n), before);
  assert.throws(
    () => root.setChild("a.b", new Module()),
    /Invalid child name "a.b"/,
  );
  assert.equal(
    toyModel(1).getModule("model.layers.0.mlp")?.getChild("up_proj") instanceof
      Linear,
    true,
  );
});

Deno.test("replaceLinearWithTargetAndQuantize() swaps every Linear and keeps biases", async () => {
  const root = toyModel(2);
  const q = root.getModule("model.layers.0.self_attn.q_proj") as Linear;
  q.bias = new Tensor(new Float32Array([1, 2, 3, 4]), [4]).to("bf16");
  const report = await replaceLinearWithTargetAndQuantize(
    root,
    W8A16LinearLayer,
  );
  assert.equal(report.quantized.length, 9);
  assert.deepEqual(report.excluded, []);
  const layer = root.getModule(
    "model.layers.0.self_attn.q_proj",
  ) as W8A16LinearLayer;
  assert.ok(layer instanceof W8A16LinearLayer);
  assert.equal(layer.bias?.dtype, "bf16");
  assert.deepEqual([...layer.bias!.toF32Array()], [1, 2, 3, 4]);
  assert.equal(
    (root.getModule("model.layers.1.mlp.up_proj") as W8A16LinearLayer).bias,
    null,
  );
  assert.deepEqual(
    [...root.namedTensors()].map(([n]) => n).filter((n) =>
      n.startsWith("model.layers.0.self_attn.q_proj")
    ),
    [
      "model.layers.0.self_attn.q_proj.int8_weights",
      "model.layers.0.self_attn.q_proj.scales",
      "model.layers.0.self_attn.q_proj.bias",
    ],
  );
});

Deno.test("excludeMatcher() matches child names, path globs and ancestors", () => {
  const m = excludeMatcher([
    "lm_head",
    "model.layers.*.mlp.down_proj",
    "model.layers.1",
    "**.k_proj",
  ]);
  assert.ok(m("lm_head"));
  assert.ok(m("decoder.lm_head")); // TinyQ's rule: the child's own name
  assert.ok(m("model.layers.0.mlp.down_proj"));
  assert.ok(!m("model.layers.0.mlp.up_proj"));
  assert.ok(m("model.layers.1.mlp.up_proj")); // under an excluded module
  assert.ok(!m("model.layers.10.mlp.up_proj"));
  assert.ok(m("model.layers.0.self_attn.k_proj"));
  assert.ok(!excludeMatcher(["model.layers.*"])("model.layersX.0"));
});

Deno.test("property: exclusion never touches excluded modules", async () => {
  const paths = [...toyModel(3).namedModules()].map(([n]) => n).filter((n) =>
    n
  );
  await fc.assert(
    fc.asyncProperty(
      fc.subarray(paths, { maxLength: 5 }),
      fc.boolean(),
      async (exclude, method) => {
        const root = toyModel(3);
        const before = new Map(
          [...root.namedModules()].map(([n, mod]) => [n, mod]),
        );
        const tensorsBefore = new Map([...root.namedTensors()]);
        const Target = method ? W8A16LinearLayer : W8A32LinearLayer;
        const report = await replaceLinearWithTargetAndQuantize(
          root,
          Target,
          exclude,
        );
        const isExcluded = excludeMatcher(exclude);
        for (const [path, mod] of root.namedModules()) {
          if (!(before.get(path) instanceof Linear)) continue;
          if (isExcluded(path)) {
            assert.equal(mod, before.get(path)); // the very same object
            assert.ok(report.excluded.includes(path));
            for (const t of ["weight", "bias"]) {
              const name = `${path}.${t}`;
              if (tensorsBefore.has(name)) {
                assert.equal(
                  mod.getTensor(t),
                  tensorsBefore.get(name),
                );
              }
            }
          } else {
            assert.ok(mod instanceof Target, path);
          }
        }
      },
    ),
    { seed: 3, numRuns: 60 },
  );
});

Deno.test("Quantizer quantizes a model by method name and rejects unknown methods", async () => {
  const root = toyModel(1);
  const quantizer = new Quantizer(root);
  assert.throws(() => quantizer.getQuantizedModel(), /not quantized yet/);
  await assert.rejects(
    // @ts-expect-error: an unknown method is a run-time error too
    quantizer.quantize("w4a4"),
    /Unknown quantization method "w4a4"; known methods: w8a32, w8a16/,
  );
  const q = await quantizer.quantize("w8a32", ["lm_head"]);
  assert.equal(q, root);
  assert.ok(root.getChild("lm_head") instanceof Linear);
  assert.ok(
    root.getModule("model.layers.0.mlp.up_proj") instanceof W8A32LinearLayer,
  );
  assert.deepEqual(quantizer.report?.excluded, ["lm_head"]);
  assert.equal(parseQuantMethod(" W8A32 "), "w8a32");
  assert.throws(() => new Quantizer().model, /No model/);
});
