/**
 * The full name of tensor `local` of the module at dotted `path`: a root
 * module (`""`, a plain `nn.Linear` state dict) has no prefix.
 *
 * @module
 */

/** `model.fc` + `weight` → `model.fc.weight`; `""` + `weight` → `weight`. */
export function memberName(path: string, local: string): string {
  return path === "" ? local : `${path}.${local}`;
}

/** A module path as printed: the root module is `(root)`. */
export function moduleLabel(path: string): string {
  return path === "" ? "(root)" : path;
}
