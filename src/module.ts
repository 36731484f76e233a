/**
 * The {@linkcode Module} tree: named children and named tensors, as in
 * PyTorch's `nn.Module`, so a model can be walked and its layers swapped.
 *
 * @module
 */

import type { TensorSource } from "./tensor.ts";

/**
 * A node of a model: named child modules plus named tensors (parameters and
 * buffers). Subclasses declare their tensors with {@linkcode Module.setTensor}.
 *
 * @example Build a two-level tree and walk it
 * ```ts
 * import { Module } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const root = new Module();
 * const block = new Module();
 * root.setChild("block", block);
 * block.setChild("inner", new Module());
 * assert.deepEqual([...root.namedModules()].map(([n]) => n), ["", "block", "block.inner"]);
 * assert.equal(String(root), "Module(\n  (block): Module(\n    (inner): Module()\n  )\n)");
 * ```
 */
export class Module {
  #children = new Map<string, Module>();
  #tensors = new Map<string, TensorSource | null>();

  /** The direct children, in insertion order, as `[name, module]` pairs. */
  *namedChildren(): Generator<[string, Module]> {
    yield* this.#children;
  }

  /**
   * Every module of the tree, depth first, with dotted paths; the root comes
   * first under `prefix` (the empty string by default), as PyTorch does.
   */
  *namedModules(prefix = ""): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [name, child] of this.#children) {
      yield* child.namedModules(prefix ? `${prefix}.${name}` : name);
    }
  }

  /** The child called `name`, or undefined. */
  getChild(name: string): Module | undefined {
    return this.#children.get(name);
  }

  /** Adds or replaces the child called `name` (its position is kept on replace). */
  setChild(name: string, module: Module): void {
    if (name === "" || name.includes(".")) {
      throw new RangeError(
        `Invalid child name "${name}": must be non-empty without "."`,
      );
    }
    this.#children.set(name, module);
  }

  /** The module at a dotted path (`"model.layers.0"`), or undefined. */
  getModule(path: string): Module | undefined {
    if (path === "") return this;
    const [first, ...rest] = path.split(".");
    let m = this.getChild(first!);
    for (const part of rest) m = m?.getChild(part);
    return m;
  }

  /** This module's own tensor called `name` (null when declared empty). */
  getTensor(name: string): TensorSource | null | undefined {
    return this.#tensors.get(name);
  }

  /** Declares or replaces this module's own tensor `name` (null: declared, absent). */
  setTensor(name: string, tensor: TensorSource | null): void {
    this.#tensors.set(name, tensor);
  }

  /** Removes this module's own tensor `name`. */
  deleteTensor(name: string): void {
    this.#tensors.delete(name);
  }

  /**
   * Every non-null tensor of the tree with its dotted path
   * (`"layers.0.weight"`), depth first: a module's own tensors, then its
   * children's. This is the order of a PyTorch `state_dict`.
   */
  *namedTensors(prefix = ""): Generator<[string, TensorSource]> {
    for (const [name, t] of this.#tensors) {
      if (t !== null) yield [prefix ? `${prefix}.${name}` : name, t];
    }
    for (const [name, child] of this.#children) {
      yield* child.namedTensors(prefix ? `${prefix}.${name}` : name);
    }
  }

  /** The class name shown when printed (PyTorch's `_get_name()`). */
  typeName(): string {
    return this.constructor.name;
  }

  /** What goes between the parentheses when printed, as PyTorch's `extra_repr()` (`in_features=4, …`). */
  extraRepr(): string {
    return "";
  }

  /**
   * The tree as PyTorch prints a module: `Name(extra)` for a leaf, the
   * children indented one per line as `(name): …`, and runs of identical
   * numbered children folded into `(0-3): 4 x …`.
   */
  toString(): string {
    const lines = this.extraRepr() ? this.extraRepr().split("\n") : [];
    const children = [...this.#children].map(([n, c]) => [n, String(c)]);
    for (let i = 0; i < children.length;) {
      const [name, repr] = children[i]!;
      let j = i + 1;
      while (
        /^\d+$/.test(name!) && j < children.length &&
        children[j]![1] === repr && /^\d+$/.test(children[j]![0]!)
      ) j++;
      const label = j - i > 1
        ? `(${name}-${children[j - 1]![0]}): ${j - i} x ${repr}`
        : `(${name}): ${repr}`;
      lines.push(label.replaceAll("\n", "\n  "));
      i = j;
    }
    if (children.length === 0) return `${this.typeName()}(${lines.join(", ")})`;
    return `${this.typeName()}(\n  ${lines.join("\n  ")}\n)`;
  }

  /** `Deno.inspect(module)` and `console.log(module)` print {@linkcode Module.toString}. */
  [Symbol.for("Deno.customInspect")](): string {
    return this.toString();
  }

  /** Frees backend resources (GPU buffers) held by this module and its children. */
  dispose(): void {
    for (const [, child] of this.#children) child.dispose();
  }
}
