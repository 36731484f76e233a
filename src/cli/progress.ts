/**
 * A progress bar on stderr for long runs: layers, bytes, speed and ETA,
 * redrawn in place with `\r` at most ten times a second — only when stderr is
 * a terminal. In a pipe it prints nothing.
 *
 * @module
 */

import type { CliIO } from "./_io.ts";

/** What the bar shows. */
export interface ProgressState {
  /** Input bytes done. */
  bytesDone: number;
  /** Input bytes in all. */
  bytesTotal: number;
  /** Layers done. */
  layersDone: number;
  /** Layers in all. */
  layersTotal: number;
  /**
   * Counts other things than layers and bytes (e.g. `windows`): the bar then
   * shows `layersDone/layersTotal unit` and an ETA from those counts.
   */
  unit?: string;
}

function clock(s: number): string {
  if (!Number.isFinite(s)) return "--:--";
  const t = Math.round(s);
  const m = Math.floor(t / 60);
  const h = Math.floor(m / 60);
  const mm = String(m % 60).padStart(2, "0");
  const ss = String(t % 60).padStart(2, "0");
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/**
 * Renders one line of the bar for a terminal `columns` wide.
 */
export function renderProgress(
  label: string,
  p: ProgressState,
  elapsed: number,
  columns: number,
): string {
  if (p.unit !== undefined) {
    p = {
      bytesDone: p.layersDone,
      bytesTotal: p.layersTotal,
      layersDone: p.layersDone,
      layersTotal: p.layersTotal,
      unit: p.unit,
    };
  }
  const frac = p.bytesTotal > 0 ? Math.min(1, p.bytesDone / p.bytesTotal) : 1;
  const rate = elapsed > 0 ? p.bytesDone / elapsed : 0;
  const eta = rate > 0 ? (p.bytesTotal - p.bytesDone) / rate : Infinity;
  const percent = ` ${String(Math.floor(frac * 100)).padStart(3)}%  `;
  const tail = p.unit !== undefined
    ? `${percent}${p.layersDone}/${p.layersTotal} ${p.unit}  ETA ${clock(eta)}`
    : `${percent}${p.layersDone}/${p.layersTotal} layers  ` +
      `${(p.bytesDone / 2 ** 20).toFixed(0)}/${
        (p.bytesTotal / 2 ** 20).toFixed(0)
      } MiB  ` +
      `${(rate / 1e6).toFixed(0)} MB/s  ETA ${clock(eta)}`;
  const room = Math.max(
    10,
    Math.min(40, columns - label.length - tail.length - 4),
  );
  const filled = Math.round(frac * room);
  const line = `${label} [${"#".repeat(filled)}${
    "-".repeat(room - filled)
  }]${tail}`;
  return line.slice(0, Math.max(1, columns - 1));
}

/** The bar itself. */
export class ProgressBar {
  #io: CliIO;
  #label: string;
  #start = performance.now();
  #last = 0;
  #shown = false;
  #state: ProgressState | null = null;
  readonly enabled: boolean;

  /** A bar labelled `label` on `io`'s stderr; inert unless stderr is a terminal. */
  constructor(io: CliIO, label: string) {
    this.#io = io;
    this.#label = label;
    this.enabled = io.errIsTerminal;
  }

  /** Records progress and redraws when due. */
  update(p: ProgressState): void {
    this.#state = p;
    if (!this.enabled) return;
    const now = performance.now();
    if (now - this.#last < 100 && p.bytesDone < p.bytesTotal) return;
    this.#last = now;
    this.#draw();
  }

  #draw(): void {
    if (!this.#state) return;
    const line = renderProgress(
      this.#label,
      this.#state,
      (performance.now() - this.#start) / 1000,
      this.#io.columns(),
    );
    this.#io.err(`\r\x1b[2K${line}`);
    this.#shown = true;
  }

  /** Prints a line above the bar (or plainly when there is no bar). */
  log(line: string): void {
    if (this.#shown) this.#io.err("\r\x1b[2K");
    this.#io.err(line + "\n");
    if (this.#shown) this.#draw();
  }

  /** Clears the bar. */
  done(): void {
    if (this.#shown) this.#io.err("\r\x1b[2K");
    this.#shown = false;
  }
}

/** Runs `work` with a bar labelled `label`, cleared however the work ends. */
export async function withProgress<T>(
  io: CliIO,
  label: string,
  work: (bar: ProgressBar) => Promise<T>,
): Promise<T> {
  const bar = new ProgressBar(io, label);
  try {
    return await work(bar);
  } finally {
    bar.done();
  }
}
