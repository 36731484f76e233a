/**
 * Files for the checkpoint writers' positioned I/O: {@linkcode SerialFile},
 * a handle whose seeks, reads and writes never interleave, and
 * {@linkcode Readers}, the input files of one run opened once for large
 * positioned reads.
 *
 * @module
 */

import { CheckpointError, osReason } from "./checkpoint_error.ts";

/** A file handle whose positioned operations never interleave. */
export class SerialFile {
  #chain: Promise<unknown> = Promise.resolve();
  constructor(readonly file: Deno.FsFile, readonly label: string) {}

  run<T>(task: (f: Deno.FsFile) => Promise<T>): Promise<T> {
    const p = this.#chain.then(() => task(this.file));
    this.#chain = p.catch(() => {});
    return p;
  }

  idle(): Promise<unknown> {
    return this.#chain;
  }
}

/** Input files opened for raw reading, shared by the shards of one run. */
export class Readers {
  #open = new Map<string, Promise<SerialFile>>();

  /** Reads `length` bytes at `offset` of `path` into a fresh buffer. */
  async read(
    path: string,
    offset: number,
    length: number,
    tensor: string,
  ): Promise<Uint8Array> {
    let f = this.#open.get(path);
    if (!f) {
      f = Deno.open(path, { read: true }).then((h) => new SerialFile(h, path));
      this.#open.set(path, f);
    }
    let file: SerialFile;
    try {
      file = await f;
    } catch (e) {
      throw new CheckpointError(path, `cannot open: ${osReason(e)}`);
    }
    return await file.run(async (h) => {
      const buf = new Uint8Array(new ArrayBuffer(length));
      try {
        await h.seek(offset, Deno.SeekMode.Start);
        let done = 0;
        while (done < length) {
          const n = await h.read(buf.subarray(done));
          if (n === null) {
            throw new CheckpointError(
              path,
              "file ended early (changed since it was opened?)",
              tensor,
            );
          }
          done += n;
        }
      } catch (e) {
        if (e instanceof CheckpointError) throw e;
        throw new CheckpointError(path, `cannot read: ${osReason(e)}`, tensor);
      }
      return buf;
    });
  }

  /** Closes every file. */
  async close(): Promise<void> {
    for (const f of this.#open.values()) {
      try {
        const s = await f;
        await s.idle();
        s.file.close();
      } catch { /* never opened */ }
    }
    this.#open.clear();
  }
}
