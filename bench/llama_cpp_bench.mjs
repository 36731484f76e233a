// llama.cpp on this machine, for the side-by-side of issue 16: decode and
// 128-token prefill tok/s of GGUF checkpoints (tools/make_llama_gguf.py
// writes random Q8_0 and Q4_0 ones of the 0.71 B Llama shape) through the
// prebuilt CPU build of the npm package node-llama-cpp, on 2 threads.
//
//   mkdir -p /tmp/llama && cd /tmp/llama && \
//     NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --omit=optional \
//       node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1
//   /tmp/v/bin/python tools/make_llama_gguf.py /tmp/gguf
//   NODE_LLAMA_CPP=/tmp/llama/node_modules/node-llama-cpp/dist/index.js \
//     node bench/llama_cpp_bench.mjs /tmp/gguf/*.gguf [--threads 2] [--json]
//
// (--omit=optional keeps npm from fetching the CUDA and Vulkan builds.)
// Decode: the median time per generated token over 32 tokens after a
// 16-token prompt, greedy; prefill: the median of 5 evaluations of 128
// tokens into an empty context. Both include everything llama.cpp does per
// token (attention, norms, the 32000-row output layer).

import process from "node:process";

const args = process.argv.slice(2);
const files = args.filter((a) => a.endsWith(".gguf"));
const threadsAt = args.indexOf("--threads");
const threads = threadsAt >= 0 ? Number(args[threadsAt + 1]) : 2;
const json = args.includes("--json");
const entry = process.env.NODE_LLAMA_CPP ?? "node-llama-cpp";
const { getLlama } = await import(entry);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
};

const llama = await getLlama({
  gpu: false,
  build: "never",
  maxThreads: threads,
});
const results = [];
for (const modelPath of files) {
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  const context = await model.createContext({
    contextSize: 512,
    batchSize: 512,
    threads: { ideal: threads, min: threads },
  });
  const seq = context.getSequence();
  let seed = 7;
  const token = () => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return 259 + (seed % 31000);
  };
  const prefill = [];
  for (let r = 0; r < 6; r++) {
    await seq.clearHistory();
    const prompt = Array.from({ length: 128 }, token);
    const t0 = performance.now();
    await seq.evaluateWithoutGeneratingNewTokens(prompt);
    if (r > 0) prefill.push(performance.now() - t0);
  }
  await seq.clearHistory();
  const steps = [];
  let last = performance.now();
  let n = 0;
  for await (const _ of seq.evaluate(Array.from({ length: 16 }, token))) {
    const now = performance.now();
    if (n > 0) steps.push(now - last);
    last = now;
    if (++n > 32) break;
  }
  const decodeMs = median(steps), prefillMs = median(prefill);
  const r = {
    model: modelPath.split("/").pop(),
    threads,
    decode_ms_per_token: decodeMs,
    decode_tok_s: 1000 / decodeMs,
    prefill128_ms: prefillMs,
    prefill_tok_s: 128000 / prefillMs,
    model_bytes: model.size,
  };
  results.push(r);
  if (!json) {
    console.log(
      `${r.model}: decode ${r.decode_tok_s.toFixed(1)} tok/s (${
        decodeMs.toFixed(1)
      } ms/token), ` +
        `prefill 128 ${r.prefill_tok_s.toFixed(0)} tok/s (${
          prefillMs.toFixed(0)
        } ms), ${threads} threads`,
    );
  }
  await context.dispose();
  await model.dispose();
}
if (json) console.log(JSON.stringify(results));
