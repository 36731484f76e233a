/**
 * The zip container of `torch.save`: a reader of the central directory only,
 * enough to find where each stored (uncompressed) entry's bytes lie in the
 * file. `torch.save` writes every entry with method 0 (stored), 64-byte
 * aligned through padding in the local extra field, and zip64 records once
 * the archive passes 4 GiB; both are handled. Nothing is ever extracted to
 * disk, and a name that would leave the archive (absolute, `..`, a
 * backslash) is refused all the same, as a sign of a crafted file.
 *
 * @module
 */

import { CheckpointError, osReason } from "../checkpoint_error.ts";

/** One entry of the archive. */
export interface ZipEntry {
  /** The name in the central directory (`archive/data/0`). */
  readonly name: string;
  /** Compression method (0 = stored). */
  readonly method: number;
  /** Uncompressed size in bytes. */
  readonly size: number;
  /** CRC-32 from the central directory. */
  readonly crc32: number;
  /** Where the local header starts. */
  readonly headerOffset: number;
}

const EOCD = 0x06054b50;
const EOCD64 = 0x06064b50;
const EOCD64_LOCATOR = 0x07064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;
/** Central directories larger than this are refused (≈ 3 M entries). */
const MAX_CENTRAL_DIRECTORY = 256 * 2 ** 20;

/** Reads exactly `length` bytes at `position`, or fails naming `path`. */
export async function readExactly(
  file: Deno.FsFile,
  path: string,
  position: number,
  length: number,
  tensor?: string,
): Promise<Uint8Array> {
  const buf = new Uint8Array(new ArrayBuffer(length));
  try {
    await file.seek(position, Deno.SeekMode.Start);
    let done = 0;
    while (done < length) {
      const n = await file.read(buf.subarray(done));
      if (n === null) {
        throw new CheckpointError(
          path,
          `file ended at byte ${
            position + done
          }, before the ${length} bytes at ${position}`,
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
}

function u64(view: DataView, at: number, path: string): number {
  const v = view.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CheckpointError(
      path,
      "zip64 field over 2^53; not a torch.save file",
    );
  }
  return Number(v);
}

/** Why `name` is not a plain relative path inside the archive, or null. */
export function unsafeName(name: string): string | null {
  if (name === "" || name.includes("\0")) return "an empty or NUL name";
  if (name.startsWith("/") || /^[A-Za-z]:/.test(name)) {
    return "an absolute path";
  }
  if (name.includes("\\")) return "a backslash";
  if (name.split("/").includes("..")) return "a '..' component";
  return null;
}

/**
 * An open zip archive: the central directory read, entries looked up by
 * name, and the data offset of a stored entry found from its local header.
 */
export class ZipArchive {
  /** The path, for error messages. */
  readonly path: string;
  /** Every entry, in central-directory order. */
  readonly entries: readonly ZipEntry[];
  #byName: Map<string, ZipEntry>;
  #size: number;

  private constructor(path: string, entries: ZipEntry[], size: number) {
    this.path = path;
    this.entries = entries;
    this.#byName = new Map(entries.map((e) => [e.name, e]));
    this.#size = size;
  }

  /** Reads and checks the central directory of the open `file`. */
  static async open(
    file: Deno.FsFile,
    path: string,
    size: number,
  ): Promise<ZipArchive> {
    const bad = (why: string): never => {
      throw new CheckpointError(path, `not a valid torch.save zip: ${why}`);
    };
    const tailLength = Math.min(size, 22 + 0xffff);
    const tail = await readExactly(file, path, size - tailLength, tailLength);
    const tv = new DataView(tail.buffer);
    let at = -1;
    for (let i = tailLength - 22; i >= 0; i--) {
      if (tv.getUint32(i, true) === EOCD) {
        at = i;
        break;
      }
    }
    if (at < 0) bad("no end-of-central-directory record");
    let count = tv.getUint16(at + 10, true);
    let cdSize = tv.getUint32(at + 12, true);
    let cdOffset = tv.getUint32(at + 16, true);
    const eocdPos = size - tailLength + at;
    if (
      count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff
    ) {
      if (eocdPos < 20) bad("zip64 locator missing");
      const loc = new DataView(
        (await readExactly(file, path, eocdPos - 20, 20)).buffer,
      );
      if (loc.getUint32(0, true) !== EOCD64_LOCATOR) {
        bad("zip64 locator missing");
      }
      const recPos = u64(loc, 8, path);
      if (recPos + 56 > size) bad("zip64 record past the end of the file");
      const rec = new DataView(
        (await readExactly(file, path, recPos, 56)).buffer,
      );
      if (rec.getUint32(0, true) !== EOCD64) bad("zip64 record missing");
      count = u64(rec, 32, path);
      cdSize = u64(rec, 40, path);
      cdOffset = u64(rec, 48, path);
    }
    if (cdOffset + cdSize > size) {
      bad("central directory past the end of the file");
    }
    if (cdSize > MAX_CENTRAL_DIRECTORY) {
      bad(`central directory of ${cdSize} bytes`);
    }
    const cd = await readExactly(file, path, cdOffset, cdSize);
    const v = new DataView(cd.buffer);
    const decoder = new TextDecoder("utf-8", { fatal: true });
    const entries: ZipEntry[] = [];
    const seen = new Set<string>();
    let p = 0;
    for (let n = 0; n < count; n++) {
      if (p + 46 > cdSize || v.getUint32(p, true) !== CENTRAL) {
        bad(`central directory entry ${n} is malformed`);
      }
      const method = v.getUint16(p + 10, true);
      const crc32 = v.getUint32(p + 16, true);
      let compressed = v.getUint32(p + 20, true);
      let uncompressed = v.getUint32(p + 24, true);
      const nameLen = v.getUint16(p + 28, true);
      const extraLen = v.getUint16(p + 30, true);
      const commentLen = v.getUint16(p + 32, true);
      let offset = v.getUint32(p + 42, true);
      if (p + 46 + nameLen + extraLen + commentLen > cdSize) {
        bad(`central directory entry ${n} is malformed`);
      }
      let name: string;
      try {
        name = decoder.decode(cd.subarray(p + 46, p + 46 + nameLen));
      } catch {
        return bad(`entry ${n} has a name that is not UTF-8`);
      }
      // zip64 extended information: the 0xffffffff fields, in order.
      let e = p + 46 + nameLen;
      const extraEnd = e + extraLen;
      while (e + 4 <= extraEnd) {
        const id = v.getUint16(e, true);
        const len = v.getUint16(e + 2, true);
        if (e + 4 + len > extraEnd) {
          bad(`entry ${JSON.stringify(name)} has a bad extra field`);
        }
        if (id === 0x0001) {
          let q = e + 4;
          const take = (): number => {
            if (q + 8 > e + 4 + len) {
              bad(`entry ${JSON.stringify(name)} has a short zip64 field`);
            }
            const x = u64(v, q, path);
            q += 8;
            return x;
          };
          if (uncompressed === 0xffffffff) uncompressed = take();
          if (compressed === 0xffffffff) compressed = take();
          if (offset === 0xffffffff) offset = take();
        }
        e += 4 + len;
      }
      const why = unsafeName(name);
      if (why) {
        throw new CheckpointError(
          path,
          `zip entry ${
            JSON.stringify(name)
          } has ${why}, leading outside the archive; refused`,
        );
      }
      if (seen.has(name)) bad(`entry ${JSON.stringify(name)} appears twice`);
      seen.add(name);
      if (method === 0 && compressed !== uncompressed) {
        bad(`stored entry ${JSON.stringify(name)} has two sizes`);
      }
      if (offset + 30 + compressed > size) {
        bad(`entry ${JSON.stringify(name)} lies past the end of the file`);
      }
      entries.push({
        name,
        method,
        size: uncompressed,
        crc32,
        headerOffset: offset,
      });
      p += 46 + nameLen + extraLen + commentLen;
    }
    return new ZipArchive(path, entries, size);
  }

  /** The entry called `name`, or undefined. */
  get(name: string): ZipEntry | undefined {
    return this.#byName.get(name);
  }

  /**
   * The absolute offset of the bytes of the stored entry `entry`, read from
   * its local header. A compressed entry is refused: `torch.save` never
   * writes one, and reading it would need the whole entry in memory.
   */
  async dataOffset(file: Deno.FsFile, entry: ZipEntry): Promise<number> {
    if (entry.method !== 0) {
      throw new CheckpointError(
        this.path,
        `zip entry ${
          JSON.stringify(entry.name)
        } is compressed (method ${entry.method}); torch.save stores entries uncompressed, so this file was repacked — re-save it with torch.save`,
      );
    }
    const h = new DataView(
      (await readExactly(file, this.path, entry.headerOffset, 30)).buffer,
    );
    if (h.getUint32(0, true) !== LOCAL) {
      throw new CheckpointError(
        this.path,
        `not a valid torch.save zip: no local header for ${
          JSON.stringify(entry.name)
        }`,
      );
    }
    const start = entry.headerOffset + 30 + h.getUint16(26, true) +
      h.getUint16(28, true);
    if (start + entry.size > this.#size) {
      throw new CheckpointError(
        this.path,
        `not a valid torch.save zip: ${
          JSON.stringify(entry.name)
        } lies past the end of the file`,
      );
    }
    return start;
  }
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (the zip polynomial) of `bytes`. */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) {
    c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  }
  return (c ^ 0xffffffff) >>> 0;
}
