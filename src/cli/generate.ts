/**
 * `tinyq generate <model> --prompt TEXT`: run a causal LM (float, quantized
 * at load with `--method`, or a quantized checkpoint) and stream the text to
 * stdout as it is produced; load time, prefill and decode speed and peak
 * memory go to stderr.
 *
 * @module
 */

import { flag, parseCommandArgs, str } from "./_args.ts";
import { type CliIO, UsageError } from "./_io.ts";
import { stdoutFailure } from "./_safe_io.ts";
import { intValue, numberValue } from "./_numbers.ts";
import {
  MODEL_FLAGS,
  MODEL_FLAGS_HELP,
  openModel,
  peakMemoryBytes,
  tokS,
  warmUp,
} from "./_model.ts";
import type { Prompt } from "../models/generate.ts";
import { DEFAULT_SAMPLING } from "../models/sampler.ts";
import { humanBytes, seconds } from "./tables.ts";

/** `tinyq generate --help`. */
export const GENERATE_HELP =
  `Usage: tinyq generate <model> --prompt <text> [options]

Runs the causal LM in the folder <model> (config.json, safetensors weights,
tokenizer.json) on the prompt and streams the prompt and its continuation to
stdout. Stderr gets the load time, prompt tokens and prefill speed, decode
speed (after a one-token warm-up) and peak memory. When stdout closes
(| head) generation stops there, with exit status 0.

Options:
  -p, --prompt <text>           the prompt (required)
  -n, --max-new-tokens <n>      new tokens at most (default 64; an error when
                                prompt + n is past the model's context)
      --temperature <t>         softmax temperature; 0 is greedy (default ${DEFAULT_SAMPLING.temperature})
      --top-k <k>               sample from the k most likely tokens; 0: all
                                (default ${DEFAULT_SAMPLING.topK})
      --top-p <p>               ...and from the smallest set with mass >= p
                                (default ${DEFAULT_SAMPLING.topP})
      --seed <n>                seed of the sampler (default: random, printed)
      --ignore-eos              keep going past the end-of-sequence token
      --chat                    the prompt is a user message in the model's
                                chat template; only the reply is printed
      --system <text>           a system message before it (with --chat)
${MODEL_FLAGS_HELP}
      --json                    print one JSON object instead of the text
  -v, --verbose                 stack traces on errors
  -h, --help                    show this help
`;

/** Runs `tinyq generate`; returns the exit code. */
export async function generateCommand(
  args: readonly string[],
  io: CliIO,
): Promise<number> {
  const p = parseCommandArgs("generate", args, {
    prompt: { type: "string", short: "p" },
    "max-new-tokens": { type: "string", short: "n" },
    temperature: { type: "string" },
    "top-k": { type: "string" },
    "top-p": { type: "string" },
    seed: { type: "string" },
    "ignore-eos": { type: "boolean" },
    chat: { type: "boolean" },
    system: { type: "string" },
    json: { type: "boolean" },
    ...MODEL_FLAGS,
  }, { min: 1, max: 1, names: "<model>" });
  if (flag(p, "help")) {
    io.out(GENERATE_HELP);
    return 0;
  }
  const text = str(p, "prompt");
  if (text === undefined) {
    throw new UsageError("generate", "missing --prompt <text>");
  }
  const maxNewTokens = intValue("generate", p, "max-new-tokens", 1);
  const temperature = numberValue("generate", p, "temperature", 0, Infinity);
  const topK = intValue("generate", p, "top-k", 0);
  const topP = numberValue("generate", p, "top-p", 0, 1, true);
  const seed = intValue("generate", p, "seed", 0);
  const json = flag(p, "json");
  const chat = flag(p, "chat");
  const system = str(p, "system");
  if (system !== undefined && !chat) {
    throw new UsageError("generate", "--system needs --chat");
  }
  const path = p.positionals[0]!;

  const { lm, loadMs } = await openModel("generate", path, p);
  try {
    const prompt: Prompt = chat
      ? {
        messages: [
          ...(system !== undefined
            ? [{ role: "system", content: system }]
            : []),
          { role: "user", content: text },
        ],
      }
      : text;
    const gen = lm.generate(prompt, {
      ...(maxNewTokens !== undefined ? { maxNewTokens } : {}),
      ...(temperature !== undefined ? { temperature } : {}),
      ...(topK !== undefined ? { topK } : {}),
      ...(topP !== undefined ? { topP } : {}),
      ...(seed !== undefined ? { seed } : {}),
      ignoreEos: flag(p, "ignore-eos"),
    });
    await warmUp(lm);
    io.err(
      `tinyq generate: loaded ${path} (${lm.config.family}) on ${lm.engine.name} in ${
        seconds(loadMs / 1000)
      }\n`,
    );
    let printed = "";
    if (!json && !chat) io.out(text);
    // The text is the work: once stdout is gone there is no one to generate
    // for, so the stream stops at the next token.
    let closed: unknown = null;
    for await (const t of gen) {
      if (!json && t.text) {
        io.out(t.text);
        printed += t.text;
      }
      closed = stdoutFailure(io);
      if (closed !== null) break;
    }
    const s = gen.stats!;
    if (!json && closed === null) {
      io.out(s.text.slice(printed.length) + "\n");
    }
    const peak = peakMemoryBytes();
    io.err(
      `prompt: ${s.promptIds.length} tokens, prefill ${
        tokS(s.prefillTokS)
      }; decode: ${s.tokens.length} tokens, ${tokS(s.decodeTokS)}; stop: ${
        closed !== null
          ? "stdout closed"
          : s.stop === "eos"
          ? "end of sequence"
          : "length"
      }; peak memory ${humanBytes(peak)}; seed ${s.seed}\n`,
    );
    // A reader that closed the pipe chose to stop (as `yes | head` does);
    // any other failure lost the text, the work.
    if (closed !== null && !(closed instanceof Deno.errors.BrokenPipe)) {
      throw new Error(
        `the text could not be written to stdout (${
          closed instanceof Error ? closed.message : String(closed)
        })`,
      );
    }
    if (json) {
      io.out(
        JSON.stringify({
          model: path,
          family: lm.config.family,
          backend: lm.engine.name,
          prompt: text,
          prompt_tokens: s.promptIds.length,
          prompt_ids: s.promptIds,
          tokens: s.tokens,
          text: s.text,
          stop: s.stop,
          seed: s.seed,
          temperature: s.sampling.temperature,
          top_k: s.sampling.topK,
          top_p: s.sampling.topP,
          load_ms: round(loadMs),
          prefill_ms: round(s.prefillMs),
          decode_ms: round(s.decodeMs),
          prefill_tok_s: round(s.prefillTokS),
          decode_tok_s: round(s.decodeTokS),
          peak_memory_bytes: peak,
        }) + "\n",
      );
    }
    return 0;
  } finally {
    lm.dispose();
  }
}

function round(v: number): number {
  return Math.round(v * 100) / 100;
}
