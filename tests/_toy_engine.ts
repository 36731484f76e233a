// A tiny deterministic engine for unit tests of the generation loop: the
// logits of a position depend only on the token there (a fixed chain
// next(t) = chain[t], with a margin), and it checks the positions it is fed.
import type { Engine, SamplerParams } from "../src/models/engine.ts";
import { sampleToken } from "../src/models/sampler.ts";

export class ToyEngine implements Engine {
  readonly name = "cpu" as const;
  pos = 0;
  calls: { tokens: number[]; pos: number }[] = [];
  constructor(
    readonly vocab: number,
    readonly next: (t: number) => number,
  ) {}
  row(t: number): Float32Array {
    const r = new Float32Array(this.vocab);
    for (let i = 0; i < this.vocab; i++) r[i] = ((i * 7 + t * 13) % 17) / 17;
    r[this.next(t)] = 4;
    return r;
  }
  step(
    tokens: readonly number[],
    pos: number,
    rows: "last" | "all",
  ): Promise<Float32Array> {
    if (pos !== this.pos) {
      throw new Error(`fed at ${pos}, cache holds ${this.pos}`);
    }
    this.calls.push({ tokens: [...tokens], pos });
    this.pos += tokens.length;
    if (rows === "last") return Promise.resolve(this.row(tokens.at(-1)!));
    const out = new Float32Array(tokens.length * this.vocab);
    tokens.forEach((t, i) => out.set(this.row(t), i * this.vocab));
    return Promise.resolve(out);
  }
  async stepAndSample(
    tokens: readonly number[],
    pos: number,
    sampler: SamplerParams,
    u: number,
  ): Promise<number> {
    return sampleToken(await this.step(tokens, pos, "last"), sampler, u);
  }
  reset(): void {
    this.pos = 0;
  }
  dispose(): void {}
}
