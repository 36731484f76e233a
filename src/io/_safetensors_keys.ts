/**
 * Duplicate-key detection for JSON text. `JSON.parse` keeps the last of two
 * equal keys without a word, so a header naming one tensor twice would
 * silently lose one of them; this scan finds such keys.
 *
 * @module
 */

/** A key that occurs twice in one object, and the keys leading to it. */
export interface DuplicateKey {
  /** The repeated key, decoded (`"\u0061"` and `"a"` are the same key). */
  key: string;
  /** Keys of the enclosing objects, outermost first (`[]` at top level). */
  path: string[];
}

interface Frame {
  /** Keys seen so far; `null` for an array. */
  keys: Set<string> | null;
  /** The next string token is a key. */
  expectKey: boolean;
  /** The most recent key, which names the next container opened inside. */
  lastKey: string;
  /** This container's own name in its parent. */
  label: string;
}

const STRUCTURE = /[{}[\]",]/g;
const BACKSLASH = 92;

/**
 * Returns the first key repeated within one object of `text`, or `null`.
 * `text` must already be valid JSON (it is not re-validated), which lets the
 * scan skip everything but braces, brackets, commas and strings.
 */
export function findDuplicateKey(text: string): DuplicateKey | null {
  const stack: Frame[] = [];
  const re = new RegExp(STRUCTURE.source, "g");
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const top = stack[stack.length - 1];
    switch (m[0]) {
      case "{":
      case "[":
        stack.push({
          keys: m[0] === "{" ? new Set() : null,
          expectKey: m[0] === "{",
          lastKey: "",
          label: top?.keys ? top.lastKey : "[]",
        });
        break;
      case "}":
      case "]":
        stack.pop();
        break;
      case ",":
        if (top?.keys) top.expectKey = true;
        break;
      default: {
        const end = closingQuote(text, m.index);
        re.lastIndex = end + 1;
        if (!top?.keys || !top.expectKey) break;
        const raw = text.slice(m.index + 1, end);
        const key = raw.includes("\\") ? JSON.parse(`"${raw}"`) as string : raw;
        if (top.keys.has(key)) {
          return { key, path: stack.slice(1).map((f) => f.label) };
        }
        top.keys.add(key);
        top.lastKey = key;
        top.expectKey = false;
      }
    }
  }
  return null;
}

/** Index of the quote ending the string that opens at `start`. */
function closingQuote(text: string, start: number): number {
  let from = start + 1;
  for (;;) {
    const q = text.indexOf('"', from);
    if (q < 0) return text.length; // unreachable for valid JSON
    let b = q - 1;
    while (text.charCodeAt(b) === BACKSLASH) b--;
    // An even run of backslashes escapes itself, not the quote.
    if ((q - 1 - b) % 2 === 0) return q;
    from = q + 1;
  }
}
