import assert from "node:assert/strict";
import { join } from "node:path";
import fc from "fast-check";
import { CheckpointError } from "../src/io/checkpoint.ts";
import { unpickle } from "../src/io/pytorch/unpickle.ts";
import { PytorchFile } from "../src/io/pytorch/state_dict.ts";
import { ZipArchive } from "../src/io/pytorch/zip.ts";
import { withDir } from "./_checkpoint_fixtures.ts";

const FIX = new URL("./fixtures/pytorch/", import.meta.url).pathname;

async function dataPkl(path: string): Promise<Uint8Array> {
  using f = await Deno.open(path);
  const zip = await ZipArchive.open(f, path, (await f.stat()).size);
  const e = zip.entries.find((x) => x.name.endsWith("/data.pkl"))!;
  const at = await zip.dataOffset(f, e);
  const all = await Deno.readFile(path);
  return all.slice(at, at + e.size);
}

Deno.test("the unpickler turns any corruption of a real data.pkl into a CheckpointError or a value, never another error", async () => {
  const pkl = await dataPkl(join(FIX, "dtypes.bin"));
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(fc.nat(pkl.length - 1), fc.integer({ min: 0, max: 255 })),
        {
          minLength: 1,
          maxLength: 8,
        },
      ),
      fc.nat(pkl.length),
      (edits, cut) => {
        const b = pkl.slice(0, Math.max(1, cut === 0 ? pkl.length : cut));
        for (const [i, v] of edits) if (i < b.length) b[i] = v;
        try {
          unpickle(b, "x.bin");
        } catch (e) {
          assert.ok(e instanceof CheckpointError, String(e));
          assert.doesNotMatch(e.message, /\n/);
        }
      },
    ),
    { numRuns: 400, seed: 15 },
  );
});

Deno.test("PytorchFile.open turns any corruption of a torch.save zip into a CheckpointError, and a read either matches the bytes or fails cleanly", async () => {
  const src = await Deno.readFile(join(FIX, "llama_bin", "pytorch_model.bin"));
  await withDir(async (dir) => {
    const path = join(dir, "m.bin");
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.tuple(fc.nat(src.length - 1), fc.integer({ min: 0, max: 255 })),
          {
            minLength: 1,
            maxLength: 6,
          },
        ),
        fc.boolean(),
        async (edits, truncate) => {
          const b = src.slice(
            0,
            truncate ? src.length - 1 - (edits[0]![0] % 2000) : src.length,
          );
          for (const [i, v] of edits) if (i < b.length) b[i] = v;
          await Deno.writeFile(path, b);
          try {
            using f = await PytorchFile.open(path);
            for (const t of f.tensors) {
              const bytes = await f.readBytes(t.name);
              assert.equal(bytes.byteLength, t.byteLength);
            }
          } catch (e) {
            assert.ok(e instanceof CheckpointError, String(e));
            assert.doesNotMatch(e.message, /\n/);
          }
        },
      ),
      { numRuns: 150, seed: 15 },
    );
  });
});
