import { loadCausalLM } from "./mod.ts";
const lm = await loadCausalLM("./models/tinystories-656k", { backend: "webgpu", contextLength: 256 });
const g = { temperature: 0, topK: 0, topP: 1 };
let t = await lm.engine.stepAndSample([1, 80, 147], 0, g, 0);
const t0 = performance.now();
for (let p = 3; p < 103; p++) t = await lm.engine.stepAndSample([t], p, g, 0);
const ms = (performance.now() - t0) / 100;
console.log("ms/token", ms.toFixed(2), lm.engine.stats!());
