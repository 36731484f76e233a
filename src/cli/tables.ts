/**
 * Plain-text tables and the number formats of the CLI's reports.
 *
 * @module
 */

import { escapeControls } from "./_safe_io.ts";

/** Column alignment. */
export type Align = "left" | "right";

/**
 * Lays out rows under a header, columns padded to their widest cell;
 * numeric columns are best right-aligned.
 */
export function formatTable(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  align: readonly Align[] = [],
): string {
  // Escaped before measuring, so a name with control characters keeps its
  // column (the output stream escapes them anyway).
  rows = rows.map((r) => r.map((c) => escapeControls(c, false)));
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length))
  );
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => {
      const last = i === cells.length - 1;
      if (align[i] === "right") return c.padStart(widths[i]!);
      return last ? c : c.padEnd(widths[i]!);
    }).join("  ").trimEnd() + "\n";
  return line(header) + rows.map(line).join("");
}

/** Bytes as MiB with two decimals. */
export function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(2);
}

/** Bytes in the largest binary unit that keeps the number ≥ 1 (`1.5 KiB`). */
export function humanBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

/** Seconds as `1.23 s`, or `12 ms` below one second. */
export function seconds(s: number): string {
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`;
}

/** A shape as `[4096, 4096]`. */
export function shape(s: readonly number[]): string {
  return `[${s.join(", ")}]`;
}

/** `text` cut to `width` characters from the left, `…` marking the cut. */
export function clipLeft(text: string, width: number): string {
  return text.length <= width
    ? text
    : `…${text.slice(text.length - width + 1)}`;
}

/**
 * {@linkcode formatTable} narrowed to `width` columns where it can be: the
 * first column's cells lose their start (`…layers.7.mlp.up_proj`), down to
 * `minFirst` characters.
 */
export function formatTableFit(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  align: readonly Align[],
  width: number,
  minFirst = 16,
): string {
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length))
  );
  const total = widths.reduce((s, w) => s + w, 0) + 2 * (widths.length - 1);
  const over = total - width;
  if (over <= 0) return formatTable(header, rows, align);
  const first = Math.max(minFirst, header[0]!.length, widths[0]! - over);
  return formatTable(
    header,
    rows.map((r) => [clipLeft(r[0] ?? "", first), ...r.slice(1)]),
    align,
  );
}

/** Wraps `text` at spaces to lines of at most `width`, later lines indented by `indent`. */
export function wrapText(text: string, width: number, indent = "  "): string {
  const out: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    const next = line === "" ? word : `${line} ${word}`;
    if (next.length > width && line !== "" && line.trim() !== "") {
      out.push(line);
      line = indent + word;
    } else line = next;
  }
  out.push(line);
  return out.join("\n");
}
