import assert from "node:assert/strict";
import { join } from "node:path";
import { withDir } from "./_checkpoint_fixtures.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const WRAPPER = join(ROOT, "bin", "tinyq");
const dec = new TextDecoder();

async function sh(
  args: string[],
  env: Record<string, string>,
  cwd?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await new Deno.Command(args[0]!, {
    args: args.slice(1),
    clearEnv: true,
    env: { HOME: Deno.env.get("HOME") ?? "/tmp", NO_COLOR: "1", ...env },
    ...(cwd ? { cwd } : {}),
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: r.code,
    stdout: dec.decode(r.stdout),
    stderr: dec.decode(r.stderr),
  };
}

/** A PATH with node/npx/sh tools but no deno: /usr/bin and /bin, checked. */
async function pathWithoutDeno(dir: string): Promise<string> {
  const path = "/usr/local/bin:/usr/bin:/bin";
  const probe = await sh(["/bin/sh", "-c", "command -v deno || true"], {
    PATH: path,
  }, dir);
  assert.equal(probe.stdout.trim(), "", "this test needs a PATH without deno");
  return path;
}

Deno.test("bin/tinyq runs with only Node.js and npm (npx fetches Deno 2.9.6), through a symlink", async () => {
  await withDir(async (dir) => {
    const path = await pathWithoutDeno(dir);
    const hasNpx = await sh(["/bin/sh", "-c", "command -v npx || true"], {
      PATH: path,
    });
    if (hasNpx.stdout.trim() === "") return; // nothing to test with
    await Deno.mkdir(join(dir, "bin"));
    await Deno.symlink(WRAPPER, join(dir, "bin", "tinyq"));
    const r = await sh([join(dir, "bin", "tinyq"), "--version"], {
      PATH: `${join(dir, "bin")}:${path}`,
      ...(Deno.env.get("npm_config_cache")
        ? { npm_config_cache: Deno.env.get("npm_config_cache")! }
        : {}),
    }, dir);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^tinyq \d+\.\d+\.\d+\n$/);
  });
});

Deno.test("bin/tinyq prefers a Deno 2 on PATH, TINYQ_DENO over both, and says what is missing when there is neither", async () => {
  await withDir(async (dir) => {
    const path = await pathWithoutDeno(dir);
    await Deno.mkdir(join(dir, "bin"));
    // A `deno` on PATH that records that it was used, then runs the real one.
    const log = join(dir, "used");
    await Deno.writeTextFile(
      join(dir, "bin", "deno"),
      `#!/bin/sh\necho "$@" >> ${log}\nexec ${Deno.execPath()} "$@"\n`,
    );
    await Deno.chmod(join(dir, "bin", "deno"), 0o755);
    let r = await sh([WRAPPER, "--version"], {
      PATH: `${join(dir, "bin")}:${path}`,
    }, dir);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^tinyq /);
    const used = await Deno.readTextFile(log);
    assert.match(
      used,
      new RegExp(`run -A --config ${ROOT}/deno.json ${ROOT}/cli.ts --version`),
    );
    r = await sh([WRAPPER, "--version"], {
      PATH: path,
      TINYQ_DENO: Deno.execPath(),
    }, dir);
    assert.equal(r.code, 0, r.stderr);
    r = await sh(["/bin/sh", WRAPPER, "--version"], {
      PATH: join(dir, "empty"),
    }, dir);
    assert.equal(r.code, 127);
    assert.equal(
      r.stderr,
      "tinyq: needs Deno 2 or Node.js with npm (npx); install one of them\n",
    );
  });
});

Deno.test("the README's library example runs from another project that links this checkout", async () => {
  await withDir(async (dir) => {
    await Deno.copyFile(
      join(ROOT, "examples", "library_use.ts"),
      join(dir, "main.ts"),
    );
    await Deno.writeTextFile(
      join(dir, "deno.json"),
      JSON.stringify({
        imports: { "@tinyq/tinyq": "jsr:@tinyq/tinyq@^0.1.0" },
        links: [ROOT],
      }),
    );
    const r = await sh([Deno.execPath(), "run", "main.ts"], {
      PATH: Deno.env.get("PATH") ?? "",
      ...(Deno.env.get("DENO_DIR")
        ? { DENO_DIR: Deno.env.get("DENO_DIR")! }
        : {}),
    }, dir);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout,
      "int8 weights: 64, -127, 32, 0, 127, 127, -127, 16\ny (f16): -0.244, 1.126\n",
    );
  });
});
