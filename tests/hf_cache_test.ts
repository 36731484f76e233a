import assert from "node:assert/strict";
import { join } from "node:path";
import { parseHubModelId, resolveHubModel } from "../src/io/hf_cache.ts";
import { withDir } from "./_checkpoint_fixtures.ts";

const FIX = new URL("./fixtures/pytorch/", import.meta.url).pathname;
const CLI = new URL("../cli.ts", import.meta.url).pathname;
const HASH_MAIN = "a".repeat(40);
const HASH_V2 = "b".repeat(40);

/**
 * Lays out `models--acme--tiny` as huggingface_hub does: file contents in
 * blobs/<sha>, snapshots/<commit>/<file> symlinks to ../../blobs/<sha>, and
 * refs/<name> holding a commit. main is the .bin model, v2 the safetensors one.
 */
async function fakeCache(cache: string): Promise<string> {
  const repo = join(cache, "models--acme--tiny");
  await Deno.mkdir(join(repo, "blobs"), { recursive: true });
  await Deno.mkdir(join(repo, "refs"));
  const snap = async (commit: string, src: string) => {
    const dir = join(repo, "snapshots", commit);
    await Deno.mkdir(dir, { recursive: true });
    for await (const e of Deno.readDir(src)) {
      const blob = `${commit.slice(0, 8)}${e.name.length}${
        e.name.replace(/\W/g, "")
      }`;
      await Deno.copyFile(join(src, e.name), join(repo, "blobs", blob));
      await Deno.symlink(`../../blobs/${blob}`, join(dir, e.name));
    }
  };
  await snap(HASH_MAIN, join(FIX, "llama_bin"));
  await snap(HASH_V2, join(FIX, "llama_safetensors"));
  await Deno.writeTextFile(join(repo, "refs", "main"), HASH_MAIN);
  await Deno.writeTextFile(join(repo, "refs", "v2"), HASH_V2);
  return repo;
}

// The parent's Deno cache, so that a child given another HOME does not
// download the npm packages again (and print that on stderr).
const DENO_DIR: string = JSON.parse(
  new TextDecoder().decode(
    new Deno.Command(Deno.execPath(), { args: ["info", "--json"] })
      .outputSync().stdout,
  ),
).denoDir;

async function tinyq(
  args: string[],
  env: Record<string, string>,
  cwd: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    env: {
      NO_COLOR: "1",
      HF_HUB_CACHE: "",
      HF_HOME: "",
      XDG_CACHE_HOME: "",
      DENO_DIR,
      ...env,
    },
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return {
    code: r.code,
    stdout: d.decode(r.stdout),
    stderr: d.decode(r.stderr),
  };
}

Deno.test("parseHubModelId takes owner/name[@revision] and nothing path-like", () => {
  assert.deepEqual(parseHubModelId("facebook/opt-125m"), {
    repo: "facebook/opt-125m",
    revision: "main",
  });
  assert.deepEqual(parseHubModelId("Salesforce/codegen-350M-mono@refs/pr/1"), {
    repo: "Salesforce/codegen-350M-mono",
    revision: "refs/pr/1",
  });
  for (
    const bad of [
      "opt-125m",
      "./a/b",
      "/a/b",
      "a/b/c",
      "a/..",
      "../b",
      "a/b@",
      "a/b@../x",
    ]
  ) {
    assert.equal(parseHubModelId(bad), null, bad);
  }
});

Deno.test("an owner/name argument resolves in $HF_HUB_CACHE through refs and blob symlinks, for every command", async () => {
  await withDir(async (dir) => {
    const cache = join(dir, "hub");
    const repo = await fakeCache(cache);
    const env = { HF_HUB_CACHE: cache };
    let r = await tinyq(["inspect", "acme/tiny"], env, dir);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      new RegExp(`snapshots/${HASH_MAIN}: folder, 1 shard`),
    );
    r = await tinyq(["inspect", "acme/tiny@v2", "--json"], env, dir);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(HASH_V2));
    r = await tinyq(["inspect", `acme/tiny@${HASH_V2}`], env, dir);
    assert.equal(r.code, 0, r.stderr);
    r = await tinyq(["quantize", "acme/tiny", "-o", "q"], env, dir);
    assert.equal(r.code, 0, r.stderr);
    const cfg = await Deno.lstat(join(dir, "q", "config.json"));
    assert.ok(
      cfg.isFile && !cfg.isSymlink,
      "the output holds files, not links into the cache",
    );
    r = await tinyq(["eval", "acme/tiny@v2", "q"], env, dir);
    assert.equal(r.code, 0, r.stderr);
    // The cache is untouched.
    assert.deepEqual(
      [...Deno.readDirSync(join(repo, "snapshots"))].map((e) => e.name).sort(),
      [HASH_MAIN, HASH_V2],
    );
  });
});

Deno.test("the cache is found under $HF_HOME/hub and ~/.cache/huggingface/hub", async () => {
  await withDir(async (dir) => {
    await fakeCache(join(dir, "hfhome", "hub"));
    let r = await tinyq(["inspect", "acme/tiny"], {
      HF_HOME: join(dir, "hfhome"),
    }, dir);
    assert.equal(r.code, 0, r.stderr);
    await fakeCache(join(dir, "home", ".cache", "huggingface", "hub"));
    r = await tinyq(["inspect", "acme/tiny"], { HOME: join(dir, "home") }, dir);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /home\/\.cache\/huggingface\/hub\/models--acme--tiny/,
    );
  });
});

Deno.test("a model in no cache gets one line naming where TinyQ looked and how to download it", async () => {
  await withDir(async (dir) => {
    const cache = join(dir, "hub");
    await fakeCache(cache);
    let r = await tinyq(["quantize", "acme/missing", "-o", "q"], {
      HF_HUB_CACHE: cache,
      HOME: join(dir, "h"),
    }, dir);
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `tinyq quantize: error: acme/missing: no such file or folder, and not in the Hugging Face cache (looked in ${cache}/models--acme--missing, ${dir}/h/.cache/huggingface/hub/models--acme--missing); download it with: huggingface-cli download acme/missing\n`,
    );
    r = await tinyq(
      ["inspect", "acme/tiny@nope"],
      { HF_HUB_CACHE: cache },
      dir,
    );
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /has no revision "nope".*huggingface-cli download acme\/tiny --revision nope\n$/,
    );
    assert.equal(r.stderr.split("\n").length, 2);
  });
});

Deno.test("a real folder named like an id wins over the cache", async () => {
  await withDir(async (dir) => {
    const cache = join(dir, "hub");
    await fakeCache(cache);
    await Deno.mkdir(join(dir, "acme"));
    await Deno.symlink(
      join(FIX, "llama_safetensors"),
      join(dir, "acme", "tiny"),
    );
    const r = await tinyq(
      ["inspect", "acme/tiny"],
      { HF_HUB_CACHE: cache },
      dir,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^acme\/tiny: folder/);
    assert.equal(
      await resolveHubModel("acme/tiny", [cache]),
      join(cache, "models--acme--tiny", "snapshots", HASH_MAIN),
    );
  });
});
