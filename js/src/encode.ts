/**
 * What a JavaScript value becomes in msgpack (docs/javascript.md, "Values on
 * the wire").  Every value either has a documented msgpack form or is
 * refused with an {@link UnsendableValueError} naming where it sits; nothing
 * is dropped or changed silently.
 *
 * | JavaScript | msgpack |
 * |---|---|
 * | `null`, `undefined` | nil |
 * | boolean | bool |
 * | number: a safe integer (not -0) | int, shortest |
 * | any other number (fractions, -0, NaN, ±Infinity, beyond 2^53) | float 64 |
 * | bigint within 64 bits | int, shortest |
 * | string (well-formed UTF-16) | str |
 * | Uint8Array (Node Buffer), Uint8ClampedArray, DataView, ArrayBuffer | bin |
 * | Array | array (holes and `undefined` are nil) |
 * | plain object (`{}`, `Object.create(null)`) | map of its own enumerable string keys |
 * | Map with scalar keys | map, keys as they are (str, int, float, bool, nil, bin) |
 * | Date (valid) | timestamp extension (-1) |
 * | ExtData (an extension value received earlier) | that extension |
 *
 * Refused: Set (msgpack has none: send `[...set]`), other typed arrays
 * (their bytes depend on the platform's byte order), functions, symbols,
 * class instances and built-ins such as RegExp, Error or Promise (only
 * plain objects and Maps say which fields are the data), strings with lone
 * surrogates (not UTF-8), bigints beyond 64 bits, invalid Dates, and values
 * nested deeper than {@link MAX_DEPTH} (a cycle, usually).
 *
 * The encoding is the shortest msgpack form of every value, byte for byte
 * what the reference (Python) encoder writes for the same data.
 */
import { ExtData, encodeTimestampExtension } from "@msgpack/msgpack";

/** Containers nested deeper than this are refused (a cycle, usually). */
export const MAX_DEPTH = 100;

/**
 * A value that has no msgpack form this client would send without losing
 * data.  `path` says where it sits, e.g. `args[1].tags`.
 */
export class UnsendableValueError extends TypeError {
  constructor(
    readonly problem: string,
    readonly path: string,
  ) {
    super(path ? `${path}: ${problem}` : problem);
    this.name = "UnsendableValueError";
  }
}

/** Thrown inside the encoder; the path is collected while it unwinds. */
class Refusal extends Error {
  readonly segments: (string | number)[] = [];
}

const textEncoder = new TextEncoder();
const MIN_INT64 = -(2n ** 63n);
const MAX_UINT64 = 2n ** 64n - 1n;
const isWellFormed: (text: string) => boolean =
  typeof (String.prototype as { isWellFormed?: unknown }).isWellFormed === "function"
    ? (text) => (text as unknown as { isWellFormed(): boolean }).isWellFormed()
    : (text) => !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text);

function typeName(value: object): string {
  const prototype = Object.getPrototypeOf(value) as { constructor?: { name?: unknown } } | null;
  const name = prototype?.constructor?.name;
  return typeof name === "string" && name ? name : Object.prototype.toString.call(value).slice(8, -1);
}

/** `{}` or `Object.create(null)`, also from another realm (an iframe). */
export function isPlainObject(value: object): boolean {
  const prototype = Object.getPrototypeOf(value) as object | null;
  if (prototype === null || prototype === Object.prototype) return true;
  return Object.getPrototypeOf(prototype) === null && typeName(value) === "Object";
}

function refuse(problem: string): never {
  throw new Refusal(problem);
}

// The buffer the encoder writes into, reused for every message.  Plain
// module functions rather than a class: the minifier shortens their names,
// which keeps the served bundle small.
let bytes = new Uint8Array(2048);
let view = new DataView(bytes.buffer);
let pos = 0;
let busy = false;

function reserve(size: number): void {
  const needed = pos + size;
  if (needed <= bytes.length) return;
  const grown = new Uint8Array(Math.max(needed, bytes.length * 2));
  grown.set(bytes.subarray(0, pos));
  bytes = grown;
  view = new DataView(grown.buffer);
}

function u8(byte: number): void {
  reserve(1);
  bytes[pos++] = byte;
}

function head8(type: number, value: number): void {
  reserve(2);
  bytes[pos++] = type;
  bytes[pos++] = value;
}

function head16(type: number, value: number): void {
  reserve(3);
  bytes[pos++] = type;
  view.setUint16(pos, value);
  pos += 2;
}

function head32(type: number, value: number): void {
  reserve(5);
  bytes[pos++] = type;
  view.setUint32(pos, value);
  pos += 4;
}

function pack(value: unknown, depth: number): void {
  switch (typeof value) {
    case "undefined":
      u8(0xc0);
      return;
    case "boolean":
      u8(value ? 0xc3 : 0xc2);
      return;
    case "number":
      if (Number.isSafeInteger(value) && !Object.is(value, -0)) packInteger(value);
      else packFloat(value);
      return;
    case "string":
      packString(value);
      return;
    case "bigint":
      packBigint(value);
      return;
    case "object":
      if (value === null) u8(0xc0);
      else packObject(value, depth);
      return;
    case "function":
      return refuse("a function cannot be sent");
    case "symbol":
      return refuse("a symbol cannot be sent");
  }
}

function packInteger(value: number): void {
  if (value >= 0) {
    if (value < 0x80) u8(value);
    else if (value < 0x100) head8(0xcc, value);
    else if (value < 0x10000) head16(0xcd, value);
    else if (value < 0x100000000) head32(0xce, value);
    else packInt64(0xcf, BigInt(value));
  } else if (value >= -0x20) u8(value & 0xff);
  else if (value >= -0x80) head8(0xd0, value & 0xff);
  else if (value >= -0x8000) head16(0xd1, value & 0xffff);
  else if (value >= -0x80000000) head32(0xd2, value >>> 0);
  else packInt64(0xd3, BigInt(value));
}

function packBigint(value: bigint): void {
  if (value < MIN_INT64 || value > MAX_UINT64) refuse(`the bigint ${value} does not fit in 64 bits (msgpack's integer range)`);
  if (value >= -0x80000000n && value < 0x100000000n) packInteger(Number(value));
  else packInt64(value < 0n ? 0xd3 : 0xcf, value);
}

function packInt64(type: number, value: bigint): void {
  reserve(9);
  bytes[pos++] = type;
  if (type === 0xcf) view.setBigUint64(pos, value);
  else view.setBigInt64(pos, value);
  pos += 8;
}

function packFloat(value: number): void {
  reserve(9);
  bytes[pos++] = 0xcb;
  view.setFloat64(pos, value);
  pos += 8;
}

function packString(text: string): void {
  const length = text.length;
  // At most 3 bytes of UTF-8 per UTF-16 unit (a pair: 4 bytes for 2 units).
  reserve(5 + length * 3);
  const start = pos;
  // Leave room for the longest header the string can need, then move the bytes if it was shorter.
  const headerSize = length < 11 ? 1 : length < 86 ? 2 : length < 21846 ? 3 : 5;
  let end: number;
  if (length < 64) {
    end = utf8Short(text, start + headerSize);
  } else {
    if (!isWellFormed(text)) refuse("a string with a lone surrogate is not valid UTF-8");
    end = start + headerSize + textEncoder.encodeInto(text, bytes.subarray(start + headerSize)).written;
  }
  const size = end - start - headerSize;
  const needed = size < 32 ? 1 : size < 0x100 ? 2 : size < 0x10000 ? 3 : 5;
  if (needed !== headerSize) bytes.copyWithin(start + needed, start + headerSize, end);
  pos = start;
  if (needed === 1) u8(0xa0 | size);
  else if (needed === 2) head8(0xd9, size);
  else if (needed === 3) head16(0xda, size);
  else head32(0xdb, size);
  pos = start + needed + size;
}

/** UTF-8 of a short string at `at`, without a call into the TextEncoder; returns the end. */
function utf8Short(text: string, at: number): number {
  let out = at;
  for (let i = 0; i < text.length; i++) {
    let code = text.charCodeAt(i);
    if (code < 0x80) {
      bytes[out++] = code;
    } else if (code < 0x800) {
      bytes[out++] = 0xc0 | (code >> 6);
      bytes[out++] = 0x80 | (code & 0x3f);
    } else {
      if (code >= 0xd800 && code <= 0xdfff) {
        const low = text.charCodeAt(i + 1);
        if (code > 0xdbff || !(low >= 0xdc00 && low <= 0xdfff)) refuse("a string with a lone surrogate is not valid UTF-8");
        code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
        i++;
        bytes[out++] = 0xf0 | (code >> 18);
        bytes[out++] = 0x80 | ((code >> 12) & 0x3f);
      } else {
        bytes[out++] = 0xe0 | (code >> 12);
      }
      bytes[out++] = 0x80 | ((code >> 6) & 0x3f);
      bytes[out++] = 0x80 | (code & 0x3f);
    }
  }
  return out;
}

function packBinary(data: Uint8Array): void {
  const size = data.length;
  if (size < 0x100) head8(0xc4, size);
  else if (size < 0x10000) head16(0xc5, size);
  else head32(0xc6, size);
  reserve(size);
  bytes.set(data, pos);
  pos += size;
}

function packExtension(type: number, data: Uint8Array): void {
  const size = data.length;
  const fixed = [1, 2, 4, 8, 16].indexOf(size);
  if (fixed >= 0) head8(0xd4 + fixed, type & 0xff);
  else {
    if (size < 0x100) head8(0xc7, size);
    else if (size < 0x10000) head16(0xc8, size);
    else head32(0xc9, size);
    u8(type & 0xff);
  }
  reserve(size);
  bytes.set(data, pos);
  pos += size;
}

function containerHead(size: number, fix: number, type16: number): void {
  if (size < 16) u8(fix | size);
  else if (size < 0x10000) head16(type16, size);
  else head32(type16 + 1, size);
}

function packObject(value: object, depth: number): void {
  if (value instanceof Uint8Array || value instanceof Uint8ClampedArray) {
    packBinary(value as Uint8Array);
  } else if (Array.isArray(value)) {
    nested(depth);
    containerHead(value.length, 0x90, 0xdc);
    let index = 0;
    try {
      // A plain index loop: holes are undefined, hence nil.
      for (; index < value.length; index++) pack(value[index], depth + 1);
    } catch (e) {
      throw located(e, index);
    }
  } else if (isPlainObject(value)) {
    nested(depth);
    const record = value as Record<string, unknown>;
    const keys = Object.keys(record);
    containerHead(keys.length, 0x80, 0xde);
    let key = "";
    try {
      for (key of keys) {
        packString(key);
        pack(record[key], depth + 1);
      }
    } catch (e) {
      throw located(e, key);
    }
  } else if (value instanceof Map) {
    nested(depth);
    containerHead(value.size, 0x80, 0xde);
    let key: unknown = undefined;
    try {
      for (const [mapKey, item] of value) {
        key = mapKey;
        packMapKey(mapKey);
        pack(item, depth + 1);
      }
    } catch (e) {
      throw located(e, mapKeyLabel(key));
    }
  } else if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) refuse("an invalid Date cannot be sent");
    packExtension(-1, encodeTimestampExtension(value)!);
  } else if (value instanceof ExtData) {
    if (typeof value.data === "function") refuse("an ExtData whose data is a function cannot be sent");
    packExtension(value.type, value.data);
  } else if (value instanceof ArrayBuffer) {
    packBinary(new Uint8Array(value));
  } else if (value instanceof DataView) {
    packBinary(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
  } else if (ArrayBuffer.isView(value)) {
    refuse(
      `a ${typeName(value)} cannot be sent (its bytes depend on the platform's byte order): ` +
        "pass Array.from(value) for its numbers, or a Uint8Array of its buffer for its bytes",
    );
  } else if (value instanceof Set) {
    refuse("a Set cannot be sent (msgpack has no set): pass [...value] to send its items as an array");
  } else {
    refuse(
      `a ${typeName(value)} cannot be sent: only plain objects and Maps become msgpack maps ` +
        "(pass a plain object, e.g. { ...value }, with the fields to send)",
    );
  }
}

function packMapKey(key: unknown): void {
  if (
    key === null ||
    key === undefined ||
    typeof key === "string" ||
    typeof key === "number" ||
    typeof key === "boolean" ||
    typeof key === "bigint" ||
    key instanceof Uint8Array
  ) {
    pack(key, 0);
    return;
  }
  refuse("a Map key must be a string, number, boolean, null, bigint or Uint8Array (protocol.md 1.3: map keys are scalars)");
}

function nested(depth: number): void {
  if (depth >= MAX_DEPTH) refuse(`nested more than ${MAX_DEPTH} deep (a cycle?)`);
}

function mapKeyLabel(key: unknown): string | number {
  if (typeof key === "string" || typeof key === "number") return key;
  if (typeof key === "bigint") return `${key}n`;
  if (typeof key === "object" && key !== null) return `<${typeName(key)} key>`;
  return String(key);
}

function located(error: unknown, segment: string | number): unknown {
  if (error instanceof Refusal) error.segments.unshift(segment);
  return error;
}

function formatPath(segments: (string | number)[]): string {
  let path = "";
  for (const segment of segments) {
    if (typeof segment === "number") path += `[${segment}]`;
    else if (/^[A-Za-z_$][\w$]*$/.test(segment)) path += path ? `.${segment}` : segment;
    else path += `[${JSON.stringify(segment)}]`;
  }
  return path;
}

/**
 * Encode `value` as msgpack (the table above).  `names` labels the
 * elements of a top-level array in error paths (e.g. the fields of a
 * message: `[undefined, "args", "kwargs"]`).
 *
 * @throws UnsendableValueError for a value with no msgpack form
 */
export function encodeValue(value: unknown, names: readonly (string | undefined)[] = []): Uint8Array {
  // A getter on a plain object may itself send (and so encode): it gets a
  // buffer of its own, and the outer encoding resumes in its buffer after.
  const outer = busy ? { bytes, view, pos } : null;
  if (outer !== null) {
    bytes = new Uint8Array(256);
    view = new DataView(bytes.buffer);
  }
  busy = true;
  pos = 0;
  try {
    pack(value, 0);
    return bytes.slice(0, pos);
  } catch (e) {
    if (!(e instanceof Refusal)) throw e;
    const segments = e.segments;
    const first = segments[0];
    if (typeof first === "number" && names[first] !== undefined) segments[0] = names[first]!;
    throw new UnsendableValueError(e.message, formatPath(segments));
  } finally {
    if (outer === null) busy = false;
    else ({ bytes, view, pos } = outer);
  }
}
