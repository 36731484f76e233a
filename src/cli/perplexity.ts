/**
 * `tinyq perplexity <model>`: how well the model predicts a text — `exp` of
 * the mean negative log-likelihood of every predicted token, in HF's sliding
 * windows — and with `--schemes`, the same for the model quantized in memory
 * under each scheme, with the KL divergence of its predictions from the
 * float model's and how often both pick the same top token (llama.cpp's
 * `--kl-divergence` idea).
 *
 * @module
 */

import { flag, list, parseCommandArgs, str } from "./_args.ts";
import { type CliIO, UsageError } from "./_io.ts";
import { intValue } from "./_numbers.ts";
import {
  excludeFlag,
  MODEL_FLAGS,
  MODEL_FLAGS_HELP,
  modelOptions,
} from "./_model.ts";
import {
  DEFAULT_SCHEMES,
  parseScheme,
  type SchemeSpec,
} from "./eval_schemes.ts";
import { type ProgressBar, withProgress } from "./progress.ts";
import { formatTable } from "./tables.ts";
import { SAMPLE_STORY } from "../demo/story.ts";
import { loadCausalLM } from "../models/load_causal_lm.ts";
import type { CausalLM } from "../models/causal_lm.ts";
import { Quantizer } from "../quantizer.ts";
import {
  compareToReference,
  type DivergenceResult,
  perplexity,
  type PerplexityResult,
  referencePredictions,
} from "../models/perplexity.ts";

/** `tinyq perplexity --help`. */
export const PERPLEXITY_HELP = `Usage: tinyq perplexity <model> [options]

Perplexity of the causal LM in <model> on a text: exp(mean negative
log-likelihood) of every predicted token, the text tokenized as the model's
tokenizer does (BOS included where it adds one), in windows of --ctx tokens
every --stride tokens (Hugging Face's sliding-window recipe; a text shorter
than the window is one window, as transformers' exp(loss)).

With --schemes, quantizes the float model in memory under each scheme
(nothing is written) and prints one row per scheme: perplexity, its change,
the mean KL divergence of the quantized model's next-token distribution from
the float model's, and how often both pick the same top token.

Options:
      --text <file>       the text to score; '-' reads stdin (default: a
                          built-in 200-token TinyStories-style story)
      --ctx <n>           tokens per window (default: the model's context)
      --stride <n>        tokens between windows (default: ctx / 2)
      --schemes <list>    compare quantization schemes: w8a32, w8a16, w8a8,
                          w4a16, with -g32/-g64/-g128 and -asym, comma-
                          separated, or 'all' (${DEFAULT_SCHEMES.join(",")})
${MODEL_FLAGS_HELP}
      --json              print the figures as one JSON object
  -v, --verbose           stack traces on errors
  -h, --help              show this help
`;

/** One row of the comparison. */
export interface PerplexityRow {
  /** `float` or a scheme name. */
  scheme: string;
  /** exp(mean NLL). */
  ppl: number;
  /** Mean NLL in nats. */
  nll: number;
  /** ppl − the float model's ppl (0 for float). */
  deltaPpl: number;
  /** Mean KL(float ‖ scheme) in nats (0 for float). */
  kl: number;
  /** Fraction of positions where the top token agrees (1 for float). */
  top1: number;
}

/** What `tinyq perplexity --schemes` found. */
export interface PerplexityReport {
  /** The float model's figures. */
  float: PerplexityResult;
  /** One row per scheme, float first. */
  rows: PerplexityRow[];
}

/** The schemes of `--schemes` (`all` is the default list of `tinyq eval`). */
export function parseSchemesFlag(
  command: string,
  text: string,
): SchemeSpec[] {
  const names = text.trim().toLowerCase() === "all"
    ? [...DEFAULT_SCHEMES]
    : text.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (names.length === 0) {
    throw new UsageError(command, "--schemes needs at least one scheme");
  }
  try {
    return names.map(parseScheme);
  } catch (e) {
    throw new UsageError(command, `--schemes: ${(e as Error).message}`);
  }
}

async function readText(
  file: string | undefined,
): Promise<{ text: string; source: string }> {
  if (file === undefined) {
    return { text: SAMPLE_STORY, source: "built-in story" };
  }
  if (file === "-") {
    return {
      text: await new Response(Deno.stdin.readable).text(),
      source: "stdin",
    };
  }
  try {
    return { text: await Deno.readTextFile(file), source: file };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`${file}: no such file (--text)`);
    }
    if (e instanceof Deno.errors.IsADirectory) {
      throw new Error(`${file}: is a directory, not a text file (--text)`);
    }
    throw new Error(`${file}: cannot read (${(e as Error).message})`);
  }
}

/**
 * The float model's perplexity on `ids` and, for each scheme, the model
 * quantized in memory (`exclude` left in float): ppl, Δppl, KL, top-1.
 */
export async function compareSchemePerplexity(
  path: string,
  float: CausalLM,
  ids: readonly number[],
  schemes: readonly SchemeSpec[],
  options: {
    ctx?: number;
    stride?: number;
    exclude?: readonly string[];
    backend?: "auto" | "cpu" | "webgpu";
    bar?: ProgressBar;
  } = {},
): Promise<PerplexityReport> {
  const { vocabSize } = float;
  const maxPositions = float.contextLength;
  const logits = (lm: CausalLM) => (x: readonly number[]) => lm.logits([...x]);
  let done = 0;
  let total = 0;
  const tick = (_d: number, windows: number) => {
    total ||= windows * (schemes.length + 1);
    options.bar?.update({
      bytesDone: 0,
      bytesTotal: 0,
      layersDone: ++done,
      layersTotal: total,
      unit: "windows",
    });
  };
  const ref = await referencePredictions(
    logits(float),
    ids,
    vocabSize,
    maxPositions,
    {
      ...(options.ctx !== undefined ? { ctx: options.ctx } : {}),
      ...(options.stride !== undefined ? { stride: options.stride } : {}),
      onWindow: tick,
    },
  );
  const rows: PerplexityRow[] = [{
    scheme: "float",
    ppl: ref.result.ppl,
    nll: ref.result.nll,
    deltaPpl: 0,
    kl: 0,
    top1: 1,
  }];
  for (const s of schemes) {
    const lm = await loadCausalLM(path, {
      ...(options.backend !== undefined ? { backend: options.backend } : {}),
    });
    try {
      const quantizer = new Quantizer(lm.model);
      await quantizer.quantize(s.method, options.exclude ?? ["lm_head"], {
        asymmetric: s.asymmetric,
        ...(s.groupSize !== null ? { groupSize: s.groupSize } : {}),
      });
      if (quantizer.report!.quantized.length === 0) {
        throw new Error(
          `${path} has no float Linear layers left to quantize (already quantized, or all excluded); --schemes needs a float checkpoint`,
        );
      }
      const r: DivergenceResult = await compareToReference(
        logits(lm),
        ids,
        vocabSize,
        ref,
        tick,
      );
      rows.push({
        scheme: s.name,
        ppl: r.ppl,
        nll: r.nll,
        deltaPpl: r.ppl - ref.result.ppl,
        kl: r.kl,
        top1: r.top1,
      });
    } finally {
      lm.dispose();
    }
  }
  return { float: ref.result, rows };
}

/** The comparison as a table. */
export function formatPerplexityRows(rows: readonly PerplexityRow[]): string {
  return formatTable(
    ["scheme", "ppl", "Δppl", "KL (nats)", "top-1"],
    rows.map((r) =>
      r.scheme === "float" ? [r.scheme, r.ppl.toFixed(3), "—", "—", "—"] : [
        r.scheme,
        r.ppl.toFixed(3),
        `${r.deltaPpl >= 0 ? "+" : ""}${r.deltaPpl.toFixed(3)}`,
        r.kl.toFixed(5),
        `${(r.top1 * 100).toFixed(1)}%`,
      ]
    ),
    ["left", "right", "right", "right", "right"],
  );
}

function headline(path: string, source: string, r: PerplexityResult): string {
  return `perplexity of ${path} on ${source}: ${r.tokens} tokens, ctx ${r.ctx}, stride ${r.stride}, ${r.windows} window${
    r.windows === 1 ? "" : "s"
  }, ${r.predicted} predicted\n`;
}

/** Runs `tinyq perplexity`; returns the exit code. */
export async function perplexityCommand(
  args: readonly string[],
  io: CliIO,
): Promise<number> {
  const p = parseCommandArgs("perplexity", args, {
    text: { type: "string" },
    ctx: { type: "string" },
    stride: { type: "string" },
    schemes: { type: "string" },
    json: { type: "boolean" },
    ...MODEL_FLAGS,
  }, { min: 1, max: 1, names: "<model>" });
  if (flag(p, "help")) {
    io.out(PERPLEXITY_HELP);
    return 0;
  }
  const ctx = intValue("perplexity", p, "ctx", 2);
  const stride = intValue("perplexity", p, "stride", 1);
  const schemesText = str(p, "schemes");
  const schemes = schemesText === undefined
    ? null
    : parseSchemesFlag("perplexity", schemesText);
  const load = modelOptions("perplexity", p);
  if (schemes && load.method !== undefined) {
    throw new UsageError(
      "perplexity",
      "--schemes compares schemes against the float model; it cannot be combined with --method",
    );
  }
  if (list(p, "exclude").length > 0 && !schemes && load.method === undefined) {
    throw new UsageError(
      "perplexity",
      "--exclude needs --method or --schemes",
    );
  }
  const exclude = excludeFlag(p);
  const json = flag(p, "json");
  const path = p.positionals[0]!;
  const { text, source } = await readText(str(p, "text"));

  const lm = await loadCausalLM(path, load);
  try {
    const ids = lm.tokenizer.encode(text);
    const windowOptions = {
      ...(ctx !== undefined ? { ctx } : {}),
      ...(stride !== undefined ? { stride } : {}),
    };
    if (!schemes) {
      const r = await withProgress(io, "perplexity", (bar) =>
        perplexity(
          (x) => lm.logits([...x]),
          ids,
          lm.vocabSize,
          lm.contextLength,
          {
            ...windowOptions,
            onWindow: (d, t) =>
              bar.update({
                bytesDone: 0,
                bytesTotal: 0,
                layersDone: d,
                layersTotal: t,
                unit: "windows",
              }),
          },
        ));
      if (json) {
        io.out(JSON.stringify({ model: path, text: source, ...r }) + "\n");
      } else {
        io.out(headline(path, source, r));
        io.out(
          `ppl ${r.ppl.toFixed(4)} (mean NLL ${r.nll.toFixed(4)} nats)\n`,
        );
      }
      return 0;
    }
    const report = await withProgress(
      io,
      "perplexity",
      (bar) =>
        compareSchemePerplexity(path, lm, ids, schemes, {
          ...windowOptions,
          exclude,
          ...(load.backend !== undefined ? { backend: load.backend } : {}),
          bar,
        }),
    );
    if (json) {
      io.out(
        JSON.stringify({
          model: path,
          text: source,
          ...report.float,
          schemes: report.rows.map((r) => ({
            scheme: r.scheme,
            ppl: r.ppl,
            nll: r.nll,
            delta_ppl: r.deltaPpl,
            kl: r.kl,
            top1: r.top1,
          })),
        }) + "\n",
      );
    } else {
      io.out(headline(path, source, report.float));
      io.out(
        `(${
          exclude.length ? exclude.join(", ") : "nothing"
        } left in float)\n\n`,
      );
      io.out(formatPerplexityRows(report.rows));
    }
    return 0;
  } finally {
    lm.dispose();
  }
}
