/**
 * Exclusions that split a group of projections vLLM fuses into one layer
 * (q/k/v_proj → qkv_proj, gate/up_proj → gate_up_proj). vLLM refuses such a
 * checkpoint at load ("requires all to use the same scheme"), so for a
 * compressed-tensors export: an `--exclude` glob that names some members
 * excludes the whole group (and says so); an exact name that leaves a group
 * split is an error, unless the caller forces a mixed group.
 *
 * @module
 */

import { excludeMatcher } from "../quant/replace.ts";
import { FUSED_GROUPS } from "./formats/compressed_tensors_warnings.ts";
import { CheckpointError } from "./checkpoint_error.ts";

/** What {@linkcode settleFusedGroups} decided. */
export interface FusedSettlement {
  /** Paths to exclude on top of what `exclude` matched. */
  readonly extra: readonly string[];
  /** One line per group extended, saying which pattern and why. */
  readonly notes: readonly string[];
}

/**
 * Looks at every fused group among `linears` (dotted paths, in order) that
 * `exclude` leaves split. A split caused by a glob is closed by excluding
 * the rest of the group; one caused by an exact name throws a
 * {@linkcode CheckpointError} naming `input`, unless `forceMixed`.
 */
export function settleFusedGroups(
  input: string,
  linears: readonly string[],
  exclude: readonly string[],
  forceMixed: boolean,
): FusedSettlement {
  const isExcluded = excludeMatcher(exclude);
  const all = new Set(linears);
  const extra: string[] = [];
  const notes: string[] = [];
  const seen = new Set<string>();
  const extended = new Map<string, {
    glob: string;
    fused: string;
    count: number;
    named: Set<string>;
    added: Set<string>;
  }>();
  for (const path of linears) {
    const dot = path.lastIndexOf(".");
    const leaf = path.slice(dot + 1);
    const parent = dot < 0 ? "" : path.slice(0, dot);
    const group = FUSED_GROUPS.find((g) => g.includes(leaf));
    if (!group || seen.has(`${parent}\0${group[0]}`)) continue;
    seen.add(`${parent}\0${group[0]}`);
    const members = group.map((m) => (parent ? `${parent}.${m}` : m))
      .filter((m) => all.has(m));
    const out = members.filter((m) => isExcluded(m));
    const kept = members.filter((m) => !isExcluded(m));
    if (out.length === 0 || kept.length === 0 || forceMixed) continue;
    const globs = exclude.filter((x) => /[*?]/.test(x));
    const byGlob = globs.find((g) => out.some((m) => excludeMatcher([g])(m)));
    const fused = group.join("/");
    if (byGlob !== undefined) {
      extra.push(...kept);
      const key = `${byGlob}\0${fused}`;
      let n = extended.get(key);
      if (!n) {
        extended.set(
          key,
          n = {
            glob: byGlob,
            fused,
            count: 0,
            named: new Set(),
            added: new Set(),
          },
        );
      }
      n.count++;
      for (const m of out) n.named.add(m.slice(m.lastIndexOf(".") + 1));
      for (const m of kept) n.added.add(m.slice(m.lastIndexOf(".") + 1));
      continue;
    }
    throw new CheckpointError(
      input,
      `--exclude leaves ${parent || "the model"} split: ${
        out.map((m) => m.slice(m.lastIndexOf(".") + 1)).join(", ")
      } in float but ${
        kept.map((m) => m.slice(m.lastIndexOf(".") + 1)).join(", ")
      } quantized; vLLM fuses ${fused} and refuses a mixed group at load. ` +
        `Exclude ${
          kept.map((m) => m.slice(m.lastIndexOf(".") + 1)).join(", ")
        } too, or name a member with a glob (--exclude '**.${
          out[0]!.slice(out[0]!.lastIndexOf(".") + 1)
        }') to exclude each whole group, or pass --force-mixed to write it anyway`,
    );
  }
  for (const n of extended.values()) {
    notes.push(
      `--exclude ${n.glob} names ${[...n.named].join(", ")} in ${n.count} ` +
        `${n.fused} group(s); vLLM fuses them into one layer with one scheme, ` +
        `so ${[...n.added].join(", ")} ${
          n.count === 1 && n.added.size === 1 ? "is" : "are"
        } excluded too`,
    );
  }
  return { extra, notes };
}
