/**
 * Checks the folder rules of `src/` (issue 13) over the static imports of every
 * `src/**\/*.ts` file:
 *
 * - folders depend one way: `cli → demo → models → io → quant → backend`; a
 *   file imports only its own folder or folders below it;
 * - a core file in `src/` itself sits just above the highest folder it imports
 *   (`tensor.ts` at the bottom, `linear.ts` above backend, `quantizer.ts` above
 *   io), so a folder imports it only from above that;
 * - no import cycles between files;
 * - `_private.ts` files are imported only from their own directory (std's rule).
 *
 * Prints each violation and exits 1; prints a summary and exits 0 when clean.
 *
 * ```sh
 * deno run -A tools/check_imports.ts
 * ```
 *
 * @module
 */
import { dirname, join, relative, resolve } from "node:path";

const FOLDERS = ["backend", "quant", "io", "models", "demo", "cli"];
const SRC = resolve(import.meta.dirname ?? ".", "..", "src");
const IMPORT_LINE =
  /^(?:import|export)\b[^"']*?(?:from\s*)?["']([^"']+)["']|^\}\s*from\s*["']([^"']+)["']/;
const DYNAMIC_IMPORT = /\bimport\(\s*["']([^"']+)["']\s*\)/;

function sourceFiles(dir: string): string[] {
  const files: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) {
      files.push(...sourceFiles(path));
    } else if (entry.isFile && entry.name.endsWith(".ts")) files.push(path);
  }
  return files;
}

/** The relative `.ts` imports of one file, as absolute paths. */
function importsOf(file: string): string[] {
  const targets: string[] = [];
  let inBlockComment = false;
  for (const line of Deno.readTextFileSync(file).split("\n")) {
    const trimmed = line.trim();
    if (inBlockComment) {
      if (trimmed.includes("*/")) inBlockComment = false;
      continue;
    }
    if (trimmed.startsWith("/*")) {
      inBlockComment = !trimmed.includes("*/");
      continue;
    }
    if (trimmed.startsWith("//")) continue;
    const match = IMPORT_LINE.exec(trimmed) ?? DYNAMIC_IMPORT.exec(trimmed);
    const specifier = match?.[1] ?? match?.[2];
    if (specifier?.startsWith(".") && specifier.endsWith(".ts")) {
      targets.push(resolve(dirname(file), specifier));
    }
  }
  return targets;
}

/** The top folder of a file under src/, or undefined for a core file. */
function folderOf(file: string): string | undefined {
  const parts = relative(SRC, file).split("/");
  return parts.length > 1 ? parts[0] : undefined;
}

const files = sourceFiles(SRC).sort();
const graph = new Map(files.map((f) => [f, importsOf(f)]));
const problems: string[] = [];
const name = (f: string) => relative(dirname(SRC), f);

for (const file of files) {
  const folder = folderOf(file);
  if (folder !== undefined && !FOLDERS.includes(folder)) {
    problems.push(
      `${name(file)}: folder src/${folder} has no place in the order`,
    );
  }
}

// A core file's rank: just above the highest folder it reaches through core files.
const coreRank = new Map<string, number>();
function rankOfCore(file: string, seen = new Set<string>()): number {
  const known = coreRank.get(file);
  if (known !== undefined) return known;
  if (seen.has(file)) return 0; // a cycle, reported below
  seen.add(file);
  let rank = 0;
  for (const target of graph.get(file) ?? []) {
    const folder = folderOf(target);
    if (!graph.has(target) || !target.startsWith(SRC)) continue;
    rank = Math.max(
      rank,
      folder === undefined
        ? rankOfCore(target, seen)
        : FOLDERS.indexOf(folder) + 1.5,
    );
  }
  coreRank.set(file, rank);
  return rank;
}
const rankOf = (file: string): number => {
  const folder = folderOf(file);
  return folder === undefined ? rankOfCore(file) : FOLDERS.indexOf(folder) + 1;
};

for (const [file, targets] of graph) {
  for (const target of targets) {
    if (!target.startsWith(SRC + "/")) continue;
    if (!graph.has(target)) {
      problems.push(`${name(file)}: imports missing ${name(target)}`);
      continue;
    }
    const base = target.slice(target.lastIndexOf("/") + 1);
    if (base.startsWith("_") && dirname(target) !== dirname(file)) {
      problems.push(
        `${name(file)}: imports ${name(target)}, private to ${
          name(dirname(target))
        }/`,
      );
    }
    const from = folderOf(file), to = folderOf(target);
    if (from === to && from !== undefined) continue;
    if (from === undefined && to === undefined) continue; // core ↔ core: cycles only
    if (rankOf(target) >= rankOf(file)) {
      problems.push(
        `${name(file)}: imports ${name(target)}, which sits above it (${
          from ?? "core"
        } → ${to ?? "core"})`,
      );
    }
  }
}

// File cycles (depth-first search; each cycle reported once by its entry point).
const state = new Map<string, "open" | "done">();
const stack: string[] = [];
function visit(file: string): void {
  state.set(file, "open");
  stack.push(file);
  for (const target of graph.get(file) ?? []) {
    if (!graph.has(target)) continue;
    if (state.get(target) === "open") {
      const cycle = stack.slice(stack.indexOf(target)).concat(target);
      problems.push(`cycle: ${cycle.map(name).join(" → ")}`);
    } else if (!state.has(target)) visit(target);
  }
  stack.pop();
  state.set(file, "done");
}
for (const file of files) if (!state.has(file)) visit(file);

if (problems.length > 0) {
  for (const problem of problems) console.error(problem);
  console.error(`check_imports: ${problems.length} violation(s)`);
  Deno.exit(1);
}
const edges = [...graph.values()].reduce((n, t) => n + t.length, 0);
console.log(
  `check_imports: ${files.length} files, ${edges} imports: no cycles, folders one way (${
    FOLDERS.slice().reverse().join(" → ")
  }), no cross-folder private imports`,
);
