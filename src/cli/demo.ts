/**
 * `tinyq demo`: TinyQ's quick start on a real model — load the committed
 * TinyStories-656K, print its architecture, generate from a prompt,
 * quantize it in memory with the `Quantizer` (lm_head left in float), print
 * the tree again, generate again, and print every scheme's perplexity, KL
 * and top-1 agreement against the float model; with `--out`, save the
 * quantized model as a checkpoint `tinyq generate` runs.
 *
 * @module
 */

import { DTYPE_SIZE } from "../dtype.ts";
import type { Module } from "../module.ts";
import { numel } from "../tensor.ts";
import { flag, parseCommandArgs, str } from "./_args.ts";
import { type CliIO, UsageError } from "./_io.ts";
import { parseMethodFlags } from "./_method.ts";
import { modelOptions, tokS, warmUp } from "./_model.ts";
import { DEFAULT_SCHEMES, parseScheme } from "./eval_schemes.ts";
import { compareSchemePerplexity, formatPerplexityRows } from "./perplexity.ts";
import { withProgress } from "./progress.ts";
import { humanBytes, seconds } from "./tables.ts";
import { SAMPLE_STORY } from "../demo/story.ts";
import type { CausalLM } from "../models/causal_lm.ts";
import { loadCausalLM } from "../models/load_causal_lm.ts";
import { Quantizer } from "../quantizer.ts";
import { existingOutputError } from "../io/atomic.ts";
import { Checkpoint } from "../io/checkpoint.ts";
import { saveModule } from "../io/save_module.ts";

/** The model the demo runs, committed with the repository. */
export const DEMO_MODEL: URL = new URL(
  "../../models/tinystories-656k",
  import.meta.url,
);

/** `tinyq demo --help`. */
export const DEMO_HELP = `Usage: tinyq demo [options]

TinyQ's quick start on a real model, TinyStories-656K (a trained
656K-parameter Llama, bf16, Apache-2.0; committed under models/):
prints the architecture, generates from "Once upon a time", quantizes the
Linear layers in memory (lm_head left in float), prints the tree again,
generates again, and prints every scheme's perplexity, KL divergence and
top-1 agreement against the float model. Nothing is written, unless
--out names a folder: then the quantized model is saved there as a TinyQ
checkpoint (config.json, tokenizer and the model's other files carried
over), which 'tinyq generate <dir>' and 'tinyq inspect <dir>' read.

Options:
  -o, --out <dir>       save the quantized model there (it appears only
                        complete)
  -f, --force           replace a previous TinyQ output at --out (never
                        other files or folders)
  -m, --method <m>      w8a16 (default), w8a32, w8a8 or w4a16
  -g, --group-size <n>  inputs per 4-bit group, w4a16 only (32, 64, 128)
      --asymmetric      zero points (per row for int8, per group for int4)
      --prompt <text>   the prompt (default "Once upon a time")
      --model <dir>     another model folder (default: TinyStories-656K)
      --backend <b>     auto (default), cpu or webgpu
  -v, --verbose         stack traces on errors
  -h, --help            show this help
`;

/** `s` as one shell word. */
function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

/** Bytes of a module tree's tensors as stored (a tied weight counted once). */
function treeBytes(model: Module): number {
  let bytes = 0;
  for (const [, t] of model.namedTensors()) {
    if (t) bytes += numel(t.shape) * DTYPE_SIZE[t.dtype];
  }
  return bytes;
}

async function greedy(
  io: CliIO,
  lm: CausalLM,
  prompt: string,
  n: number,
): Promise<void> {
  const gen = lm.generate(prompt, { temperature: 0, maxNewTokens: n });
  io.out(prompt);
  for await (const t of gen) io.out(t.text);
  const s = gen.stats!;
  io.out(
    `\n  [${s.promptIds.length} prompt tokens, ${s.tokens.length} new, greedy; prefill ${
      tokS(s.prefillTokS)
    }, decode ${tokS(s.decodeTokS)} on ${lm.engine.name}]\n\n`,
  );
}

/** Runs `tinyq demo`; returns the exit code. */
export async function demoCommand(
  args: readonly string[],
  io: CliIO,
): Promise<number> {
  const p = parseCommandArgs("demo", args, {
    method: { type: "string", short: "m" },
    "group-size": { type: "string", short: "g" },
    asymmetric: { type: "boolean" },
    prompt: { type: "string" },
    model: { type: "string" },
    backend: { type: "string" },
    out: { type: "string", short: "o" },
    force: { type: "boolean", short: "f" },
  }, { min: 0, max: 0, names: "" });
  if (flag(p, "help")) {
    io.out(DEMO_HELP);
    return 0;
  }
  const { method, groupSize } = parseMethodFlags(
    "demo",
    str(p, "method"),
    str(p, "group-size"),
  );
  const asymmetric = flag(p, "asymmetric");
  const { backend } = modelOptions("demo", {
    values: { backend: p.values.backend },
    positionals: [],
  });
  const prompt = str(p, "prompt") ?? "Once upon a time";
  if (prompt === "") throw new UsageError("demo", "--prompt is empty");
  let path = str(p, "model");
  if (path === undefined) {
    if (DEMO_MODEL.protocol !== "file:") {
      throw new Error(
        "the demo model is not on this machine (run from a clone of the repository, or pass --model <dir>)",
      );
    }
    path = decodeURIComponent(DEMO_MODEL.pathname);
  }
  const out = str(p, "out");
  if (out === "") throw new UsageError("demo", "--out is empty");
  const force = flag(p, "force");
  // Refused before the work, as quantize does; --force is checked (what it
  // may replace) when saving.
  if (
    out !== undefined && !force &&
    await Deno.lstat(out).then(() => true, () => false)
  ) {
    throw existingOutputError(out);
  }
  const shown = str(p, "model") ?? "models/tinystories-656k";
  const load = backend !== undefined ? { backend } : {};

  const t0 = performance.now();
  const lm = await loadCausalLM(path, load);
  try {
    const floatBytes = treeBytes(lm.model);
    io.out(
      `1. Load ${shown} (${lm.config.family}, ${lm.config.dtype ?? "float"}, ${
        humanBytes(floatBytes)
      } of tensors) in ${
        seconds((performance.now() - t0) / 1000)
      }. Its architecture:\n\n${String(lm.model)}\n\n`,
    );
    await warmUp(lm);
    io.out(`2. Generate from the float model:\n\n`);
    await greedy(io, lm, prompt, 40);

    const scheme = parseScheme(
      `${method}${groupSize !== undefined ? `-g${groupSize}` : ""}${
        asymmetric ? "-asym" : ""
      }`,
    );
    const quantizer = new Quantizer(lm.model);
    await quantizer.quantize(method, ["lm_head"], {
      asymmetric,
      ...(groupSize !== undefined ? { groupSize } : {}),
    });
    const report = quantizer.report!;
    io.out(
      `3. Quantize in memory: await new Quantizer(lm.model).quantize("${method}", ["lm_head"]${
        groupSize !== undefined || asymmetric
          ? `, { ${
            [
              groupSize !== undefined ? `groupSize: ${groupSize}` : "",
              asymmetric ? "asymmetric: true" : "",
            ].filter(Boolean).join(", ")
          } }`
          : ""
      })\n   ${report.quantized.length} Linear layers quantized (${scheme.name}); lm_head left in float; tensors ${
        humanBytes(floatBytes)
      } -> ${humanBytes(treeBytes(lm.model))}. The tree now:\n\n${
        String(lm.model)
      }\n\n`,
    );
    io.out(`4. Generate from the quantized model:\n\n`);
    await greedy(io, lm, prompt, 40);

    const schemes = DEFAULT_SCHEMES.includes(scheme.name)
      ? DEFAULT_SCHEMES
      : [...DEFAULT_SCHEMES, scheme.name];
    const floatLm = await loadCausalLM(path, load);
    try {
      const ids = floatLm.tokenizer.encode(SAMPLE_STORY);
      const table = await withProgress(
        io,
        "perplexity",
        (bar) =>
          compareSchemePerplexity(
            path!,
            floatLm,
            ids,
            schemes.map(parseScheme),
            {
              exclude: ["lm_head"],
              ...load,
              bar,
            },
          ),
      );
      io.out(
        `5. Every scheme on this model: perplexity of a ${ids.length}-token story, KL divergence\n` +
          `   of the next-token distribution from the float model's, and top-1 agreement\n` +
          `   (what 'tinyq perplexity ${shown} --schemes all' prints; lm_head left in float):\n\n` +
          formatPerplexityRows(table.rows),
      );
    } finally {
      floatLm.dispose();
    }
    if (out !== undefined) {
      // The quick start's last step, quantizer.save_model(path): the source
      // checkpoint gives the output its config.json and other files.
      using source = await Checkpoint.open(path);
      const saved = await saveModule(lm.model, out, {
        method,
        excluded: report.excluded,
        source,
        force,
      });
      io.out(
        `\n6. Saved the quantized model to ${out} (${
          humanBytes(saved.outputBytes)
        } of tensors); run it: tinyq generate ${shellWord(out)} --prompt ${
          shellWord(prompt)
        } --temperature 0\n`,
      );
    }
    return 0;
  } finally {
    lm.dispose();
  }
}
