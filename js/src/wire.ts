/**
 * The wire format of docs/protocol.md (version 1): message kinds, close
 * codes, error codes, and a strict decoder that checks every message's shape.
 *
 * Sans-IO: bytes in, typed messages out; nothing here touches a socket or a
 * timer.
 */
import { Decoder, DecodeError } from "@msgpack/msgpack";
import { UnsendableValueError, encodeValue, isPlainObject } from "./encode.js";

/** The WebSocket subprotocol of this protocol version. */
export const SUBPROTOCOL = "twisted-hub.v1";
/** Capabilities this client announces in HELLO. */
export const CAPABILITIES: readonly string[] = ["heartbeat", "batch", "stream"];

/**
 * A sender puts at most this many messages in one frame (a batch is split);
 * receivers accept at least this many (protocol.md 1.2).  The reference
 * server closes with 1008 on a frame of more than 1,024.
 */
export const BATCH_MESSAGES = 256;
/**
 * A batch is also closed before it would pass 64 KiB (a larger message goes
 * alone), as the Python client does (`BATCH_BYTES`), so the server starts on
 * one frame while the next is on its way.
 */
export const BATCH_BYTES = 64 * 1024;

export const MessageKind = {
  HELLO: 0,
  WELCOME: 1,
  INVOKE: 2,
  NOTIFY: 3,
  RESULT: 4,
  ERROR: 5,
  RECEIVER_CALL: 6,
  CLIENT_INVOKE: 7,
  CLOSE: 8,
  SERVER_HEARTBEAT: 9,
  SERVER_HEARTBEAT_ACK: 10,
  CLIENT_HEARTBEAT: 11,
  CLIENT_HEARTBEAT_ACK: 12,
  TOKEN: 13,
  TOKEN_RESULT: 14,
  STREAM_INVOKE: 15,
  STREAM_ITEM: 16,
  STREAM_END: 17,
  STREAM_CREDIT: 18,
  STREAM_CANCEL: 19,
  /** capability `resume` (protocol.md section 10): the session's token and window */
  SESSION: 20,
  RESUME: 21,
  RESUMED: 22,
  RESUME_REFUSED: 23,
  ACK: 24,
} as const;

export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  UNSUPPORTED_DATA: 1003,
  ABNORMAL: 1006,
  /** more messages in one frame than the receiver accepts (protocol.md 1.2) */
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  KICKED: 4000,
  HEARTBEAT_TIMEOUT: 4001,
  PROTOCOL_ERROR: 4002,
  HANDSHAKE_FAILED: 4003,
  SLOW_CONSUMER: 4004,
  /** the access token expired and no fresh one came (docs/auth.md) */
  TOKEN_EXPIRED: 4005,
  /** capability `resume`: the session was resumed over another connection (protocol.md 10.5) */
  SESSION_MOVED: 4006,
} as const;

export const ErrorCode = {
  INTERNAL: "internal",
  UNKNOWN_METHOD: "unknown-method",
  INVALID_ARGUMENTS: "invalid-arguments",
  TOO_MANY_PENDING: "too-many-pending",
  TIMEOUT: "timeout",
  DISCONNECTED: "disconnected",
  /** an authorization policy refused the call (docs/auth.md) */
  FORBIDDEN: "forbidden",
  /** capability `resume`: a repeated call whose answer is no longer kept (protocol.md 10.6) */
  DUPLICATE_CALL: "duplicate-call",
} as const;

/** Why a session could not be resumed: RESUME_REFUSED's reason (protocol.md 10.5). */
export const ResumeReason = {
  WINDOW_EXPIRED: "window-expired",
  BUFFER_OVERFLOWED: "buffer-overflowed",
  SESSION_UNKNOWN: "session-unknown",
  BACKPLANE_STATE_LOST: "backplane-state-lost",
  TOKEN_INVALID: "token-invalid",
} as const;

/** Session tokens are opaque bin of 16 to 64 bytes (protocol.md section 10). */
export const SESSION_TOKEN_MIN_BYTES = 16;
export const SESSION_TOKEN_MAX_BYTES = 64;

/** Keyword arguments: a map with str keys. */
export type Kwargs = Record<string, unknown>;

export interface Welcome {
  kind: 1;
  capabilities: string[];
  connectionId: string;
  /** [interval, timeout] in seconds when the hub sends heartbeats. */
  heartbeat: [number, number | null] | null;
  maxMessageSize: number | null;
  /** seconds until the connection's access token expires (null: never, or none) */
  expiresIn: number | null;
}
export interface Hello {
  kind: 0;
  capabilities: string[];
  maxMessageSize: number | null;
}
export interface Invoke {
  kind: 2;
  callId: number;
  method: string;
  args: unknown[];
  kwargs: Kwargs | null;
  /** STREAM_INVOKE: the first credit of the result stream (null: an INVOKE) */
  credit?: number | null;
  /** the arguments that are the client's streams, `[where, stream_id]` */
  streams?: [number | string, number][] | null;
}
export interface Notify {
  kind: 3;
  method: string;
  args: unknown[];
  kwargs: Kwargs | null;
}
export interface Result {
  kind: 4;
  callId: number;
  value: unknown;
}
export interface ErrorMessage {
  kind: 5;
  callId: number;
  code: string;
  message: string;
  detail: unknown;
}
export interface ReceiverCall {
  kind: 6;
  method: string;
  args: unknown[];
  kwargs: Kwargs | null;
}
export interface ClientInvoke {
  kind: 7;
  callId: number;
  method: string;
  args: unknown[];
  kwargs: Kwargs | null;
}
export interface Close {
  kind: 8;
  code: number;
  reason: string;
}
export interface ServerHeartbeat {
  kind: 9;
  sequence: number;
  serverTimeUs: number;
  metadata: Uint8Array | null;
}
export interface ServerHeartbeatAck {
  kind: 10;
  sequence: number;
  /** capability `resume`: the last sequenced message received (present only when sent) */
  ack?: number;
}
export interface ClientHeartbeat {
  kind: 11;
  sequence: number;
  clientTime: number;
  /** capability `resume`: the last sequenced message received (present only when sent) */
  ack?: number;
}
export interface ClientHeartbeatAck {
  kind: 12;
  sequence: number;
  clientTime: number;
  serverTimeUs: number;
  /** capability `resume`: the last sequenced message received (present only when sent) */
  ack?: number;
}
/** SESSION (20): a resumable session was opened; the token is opaque and never logged. */
export interface SessionGrant {
  kind: 20;
  token: Uint8Array;
  window: number;
}
/** RESUME (21): resume the session of `token`; received up to `received`, sent up to `sent` (optional). */
export interface Resume {
  kind: 21;
  token: Uint8Array;
  received: number;
  sent?: number;
}
/** RESUMED (22): resumed; the server received up to `received`; `token` replaces the old one; `connectionId` is the session's again. */
export interface Resumed {
  kind: 22;
  received: number;
  token: Uint8Array;
  connectionId: string;
}
/** RESUME_REFUSED (23): not resumed, for `reason` (a ResumeReason, or one this client does not know). */
export interface ResumeRefused {
  kind: 23;
  reason: string;
  message: string;
}
/** ACK (24): the sender received the peer's sequenced messages up to `received`. */
export interface Ack {
  kind: 24;
  received: number;
}

/** The answer to a fresh token: `error` null when accepted. */
export interface TokenResult {
  kind: 14;
  sequence: number;
  expiresIn: number | null;
  error: string | null;
  message: string;
}

/** One item of a stream, from its producer (either side). */
export interface StreamItem {
  kind: 16;
  streamId: number;
  item: unknown;
}

/** The producer's last word on a stream: done (`code` null) or failed. */
export interface StreamEnd {
  kind: 17;
  streamId: number;
  code: string | null;
  message: string;
  detail: unknown;
}

/** The consumer lets the producer send `credit` more items. */
export interface StreamCredit {
  kind: 18;
  streamId: number;
  credit: number;
}

/** The consumer wants no more items. */
export interface StreamCancel {
  kind: 19;
  streamId: number;
}

export type StreamMessage = StreamItem | StreamEnd | StreamCredit | StreamCancel;

/** What a client can receive. */
export type ServerMessage =
  | Welcome
  | Result
  | ErrorMessage
  | ReceiverCall
  | ClientInvoke
  | Close
  | ServerHeartbeat
  | ClientHeartbeatAck
  | TokenResult
  | SessionGrant
  | Resumed
  | ResumeRefused
  | Ack
  | StreamMessage;
/** What a server can receive. */
export type ClientMessage =
  | Hello
  | Invoke
  | Notify
  | Result
  | ErrorMessage
  | Close
  | ServerHeartbeatAck
  | ClientHeartbeat
  | Resume
  | Ack
  | StreamMessage;

/** The peer sent something that is not this protocol (close code 4002). */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

/**
 * A frame held more messages than the receiver takes (protocol.md 1.2):
 * none of them is handled, and the receiver closes with 1008.
 */
export class TooManyMessagesError extends ProtocolError {
  constructor(readonly limit: number) {
    super(`more than ${limit} messages in one frame`);
    this.name = "TooManyMessagesError";
  }
}

/** The most messages one incoming frame may hold by default (Python's `max_messages_per_frame`). */
export const MAX_MESSAGES_PER_FRAME = 1024;

// Map keys: JavaScript objects have string keys only.  str keys stay as they
// are, other scalar keys (int, float, bool, nil, bin) become their string
// form; an array or map key makes the frame invalid (protocol.md 1.3).
let nonStringKeys = 0;

function keyConverter(key: unknown): string | number {
  if (typeof key === "string") return key;
  nonStringKeys++;
  if (typeof key === "number") return key;
  if (typeof key === "boolean" || key === null || typeof key === "bigint") return String(key);
  if (key instanceof Uint8Array) return new TextDecoder().decode(key);
  throw new ProtocolError("a map key must be a scalar");
}

// The slow path for the rare frame with a non-str key: tag every key with its
// kind so a kwargs map with a non-str key can be told apart.
function taggingKeyConverter(key: unknown): string {
  return (typeof key === "string" ? "s" : "n") + String(key);
}

// One decoder for the whole client: building one per message allocates a
// buffer and a key cache each time (it clones itself if re-entered, so
// sharing is safe).
const decoder = new Decoder({ mapKeyConverter: keyConverter });
const taggingDecoder = new Decoder({ mapKeyConverter: taggingKeyConverter });

/** What the application values of each message kind a client sends are called, by index (for errors). */
const FIELD_NAMES: Record<number, readonly (string | undefined)[]> = {
  [MessageKind.INVOKE]: [undefined, undefined, undefined, "args", "kwargs"],
  [MessageKind.NOTIFY]: [undefined, undefined, "args", "kwargs"],
  [MessageKind.RESULT]: [undefined, undefined, "result"],
  [MessageKind.ERROR]: [undefined, undefined, undefined, undefined, "detail"],
};

/**
 * Encode one message array (shortest msgpack, as the reference encoder;
 * what each JavaScript value becomes: src/encode.ts).  Throws
 * {@link UnsendableValueError} for a value msgpack cannot carry as it is,
 * its path named from the message's fields (`args[0].tags`).
 */
export function encodeMessage(fields: unknown[]): Uint8Array {
  return encodeValue(fields, FIELD_NAMES[fields[0] as number]);
}

/**
 * The fields of a call or notification (`head` then args, then kwargs when
 * there are any), checked: args must be an array and kwargs a plain object
 * (str keys, protocol.md 1.3), so nothing the caller passed is dropped.
 */
export function callFields(head: unknown[], args: unknown, kwargs: unknown): unknown[] {
  if (!Array.isArray(args)) throw new UnsendableValueError(`must be an array, got ${describe(args)}`, "args");
  if (kwargs === undefined || kwargs === null) return [...head, args];
  if (typeof kwargs !== "object" || !isPlainObject(kwargs)) {
    throw new UnsendableValueError(`must be a plain object (its keys are str), got ${describe(kwargs)}`, "kwargs");
  }
  return Object.keys(kwargs).length > 0 ? [...head, args, kwargs] : [...head, args];
}

function describe(value: unknown): string {
  if (value === null || typeof value !== "object") return typeof value;
  const name = (Object.getPrototypeOf(value) as { constructor?: { name?: string } } | null)?.constructor?.name;
  return name ? `a ${name}` : "an object";
}

/** Concatenate encoded messages into one frame payload. */
export function joinFrames(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  let size = 0;
  for (const part of parts) size += part.length;
  const out = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function isUint(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0;
}

function isInt(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value);
}

function isMap(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === "object" &&
    value !== null &&
    !Array.isArray(value) &&
    !(value instanceof Uint8Array) &&
    Object.getPrototypeOf(value) === Object.prototype
  );
}

function fail(message: string): never {
  throw new ProtocolError(message);
}

function arity(fields: unknown[], min: number, max: number, name: string): void {
  if (fields.length < min || fields.length > max) {
    const wanted = min === max ? `${min}` : `${min} to ${max}`;
    fail(`${name} needs ${wanted} elements, got ${fields.length}`);
  }
}

function uint(value: unknown, what: string): number {
  if (!isUint(value)) fail(`${what} must be an unsigned integer`);
  return value;
}

function str(value: unknown, what: string): string {
  if (typeof value !== "string") fail(`${what} must be a str`);
  return value;
}

function args(value: unknown): unknown[] {
  if (!Array.isArray(value)) fail("args must be an array");
  return value;
}

function kwargs(value: unknown): Kwargs | null {
  if (value === undefined || value === null) return null;
  if (!isMap(value)) fail("kwargs must be a map");
  return Object.keys(value).length === 0 ? null : value;
}

function capabilities(info: Record<string, unknown>): string[] {
  const caps = info["caps"];
  if (caps === undefined || caps === null) return [];
  if (!Array.isArray(caps) || !caps.every((c) => typeof c === "string")) fail("caps must be an array of str");
  return caps as string[];
}

function maxSize(info: Record<string, unknown>): number | null {
  const max = info["max"];
  if (max === undefined || max === null) return null;
  if (!isUint(max) || max === 0) fail("max must be a positive integer");
  return max;
}

function seconds(value: unknown): number | null {
  if (value != null && !((value as number) >= 0)) fail("bad expires_in");
  return (value as number | undefined) ?? null;
}

function sessionToken(value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array) || value.length < SESSION_TOKEN_MIN_BYTES || value.length > SESSION_TOKEN_MAX_BYTES) {
    fail("a session token must be bin of 16 to 64 bytes");
  }
  return value;
}

/** The optional trailing ack of kinds 10-12: the property only when the field is there. */
function withAck<T extends object>(message: T, fields: unknown[], index: number): T & { ack?: number } {
  if (fields.length <= index) return message;
  return { ...message, ack: uint(fields[index], "an ack") };
}

function parseAck(fields: unknown[]): Ack {
  arity(fields, 2, 2, "ACK");
  return { kind: 24, received: uint(fields[1], "received") };
}

function parseWelcome(fields: unknown[]): Welcome {
  arity(fields, 2, 2, "WELCOME");
  const info = fields[1];
  if (!isMap(info)) fail("WELCOME info must be a map");
  const id = info["id"];
  if (id !== undefined && typeof id !== "string") fail("WELCOME id must be a str");
  const hb = info["hb"];
  let heartbeat: [number, number | null] | null = null;
  if (hb !== undefined && hb !== null) {
    if (
      !Array.isArray(hb) ||
      hb.length !== 2 ||
      typeof hb[0] !== "number" ||
      !(typeof hb[1] === "number" || hb[1] === null)
    ) {
      fail("WELCOME hb must be [interval, timeout or nil]");
    }
    heartbeat = [hb[0] as number, hb[1] as number | null];
  }
  return {
    kind: 1,
    capabilities: capabilities(info),
    connectionId: (id as string | undefined) ?? "",
    heartbeat,
    maxMessageSize: maxSize(info),
    expiresIn: seconds(info["expires_in"]),
  };
}

function parseHello(fields: unknown[]): Hello {
  arity(fields, 2, 2, "HELLO");
  const info = fields[1];
  if (!isMap(info)) fail("HELLO info must be a map");
  return { kind: 0, capabilities: capabilities(info), maxMessageSize: maxSize(info) };
}

function parseResult(fields: unknown[]): Result {
  arity(fields, 3, 3, "RESULT");
  return { kind: 4, callId: uint(fields[1], "a call id"), value: fields[2] };
}

function parseError(fields: unknown[]): ErrorMessage {
  arity(fields, 4, 5, "ERROR");
  return {
    kind: 5,
    callId: uint(fields[1], "a call id"),
    code: str(fields[2], "an error code"),
    message: str(fields[3], "an error message"),
    detail: fields.length > 4 ? fields[4] : null,
  };
}

function parseClose(fields: unknown[]): Close {
  arity(fields, 3, 3, "CLOSE");
  if (!isInt(fields[1])) fail("a close code must be an integer");
  return { kind: 8, code: fields[1], reason: str(fields[2], "a close reason") };
}

function parseStreamMessage(list: unknown[]): StreamMessage {
  const streamId = uint(list[1], "a stream id");
  switch (list[0]) {
    case MessageKind.STREAM_ITEM:
      arity(list, 3, 3, "STREAM_ITEM");
      return { kind: 16, streamId, item: list[2] };
    case MessageKind.STREAM_END:
      if (list.length !== 2) arity(list, 4, 5, "STREAM_END");
      return {
        kind: 17,
        streamId,
        code: list.length > 2 ? str(list[2], "an error code") : null,
        message: str(list[3] ?? "", "an error message"),
        detail: list[4] ?? null,
      };
    case MessageKind.STREAM_CREDIT:
      arity(list, 3, 3, "STREAM_CREDIT");
      return { kind: 18, streamId, credit: credit(list[2]) };
    default:
      arity(list, 2, 2, "STREAM_CANCEL");
      return { kind: 19, streamId };
  }
}

function credit(value: unknown): number {
  if (!isUint(value) || value === 0) fail("a credit must be a positive integer");
  return value;
}

/** A call's stream declarations, `[[where, stream_id], ...]`: each place nil in args/kwargs. */
function streamDeclarations(value: unknown, callArgs: unknown[], callKwargs: Kwargs | null): [number | string, number][] {
  if (!Array.isArray(value) || value.length === 0) fail("bad streams");
  for (const entry of value as unknown[][]) {
    const where = entry[0] as number | string;
    if (!Array.isArray(entry) || entry.length !== 2 || !isUint(entry[1]) || (typeof where === "number" ? callArgs[where] : callKwargs?.[where]) !== null) {
      fail("bad stream declaration");
    }
  }
  return value as [number | string, number][];
}

/** Parse one decoded message array received by a client (server -> client kinds). */
export function parseServerMessage(fields: unknown): ServerMessage {
  const list = checkArray(fields);
  const kind = list[0];
  switch (kind) {
    case MessageKind.WELCOME:
      return parseWelcome(list);
    case MessageKind.RESULT:
      return parseResult(list);
    case MessageKind.ERROR:
      return parseError(list);
    case MessageKind.RECEIVER_CALL:
      arity(list, 3, 4, "RECEIVER_CALL");
      return { kind: 6, method: str(list[1], "a method name"), args: args(list[2]), kwargs: kwargs(list[3]) };
    case MessageKind.CLIENT_INVOKE:
      arity(list, 4, 5, "CLIENT_INVOKE");
      return {
        kind: 7,
        callId: uint(list[1], "a call id"),
        method: str(list[2], "a method name"),
        args: args(list[3]),
        kwargs: kwargs(list[4]),
      };
    case MessageKind.CLOSE:
      return parseClose(list);
    case MessageKind.SERVER_HEARTBEAT: {
      arity(list, 3, 4, "SERVER_HEARTBEAT");
      const metadata = list[3];
      if (metadata !== undefined && metadata !== null && !(metadata instanceof Uint8Array)) {
        fail("heartbeat metadata must be bin or nil");
      }
      return {
        kind: 9,
        sequence: uint(list[1], "a sequence"),
        serverTimeUs: uint(list[2], "the server time"),
        metadata: (metadata as Uint8Array | null | undefined) ?? null,
      };
    }
    case MessageKind.CLIENT_HEARTBEAT_ACK:
      arity(list, 4, 5, "CLIENT_HEARTBEAT_ACK");
      if (!isInt(list[2])) fail("client_time must be an integer");
      return withAck(
        {
          kind: 12,
          sequence: uint(list[1], "a sequence"),
          clientTime: list[2],
          serverTimeUs: uint(list[3], "the server time"),
        } as ClientHeartbeatAck,
        list,
        4,
      );
    case MessageKind.SESSION: {
      arity(list, 3, 3, "SESSION");
      const token = sessionToken(list[1]);
      const window = list[2];
      if (typeof window !== "number" || !(window > 0)) fail("bad window");
      return { kind: 20, token, window };
    }
    case MessageKind.RESUMED:
      arity(list, 4, 4, "RESUMED");
      return {
        kind: 22,
        received: uint(list[1], "received"),
        token: sessionToken(list[2]),
        connectionId: str(list[3], "a connection id"),
      };
    case MessageKind.RESUME_REFUSED:
      arity(list, 3, 3, "RESUME_REFUSED");
      return { kind: 23, reason: str(list[1], "a reason"), message: str(list[2], "a message") };
    case MessageKind.ACK:
      return parseAck(list);
    case MessageKind.TOKEN_RESULT:
      arity(list, 3, 5, "TOKEN_RESULT");
      return {
        kind: 14,
        sequence: uint(list[1], "a sequence"),
        expiresIn: seconds(list[2]),
        error: list[3] == null ? null : str(list[3], "an error"),
        message: str(list[4] ?? "", "a message"),
      };
    case MessageKind.HELLO:
    case MessageKind.INVOKE:
    case MessageKind.NOTIFY:
    case MessageKind.SERVER_HEARTBEAT_ACK:
    case MessageKind.CLIENT_HEARTBEAT:
    case MessageKind.RESUME:
    case MessageKind.STREAM_INVOKE:
      return fail(`message kind ${kind} is never sent by a server`);
    case MessageKind.STREAM_ITEM:
    case MessageKind.STREAM_END:
    case MessageKind.STREAM_CREDIT:
    case MessageKind.STREAM_CANCEL:
      return parseStreamMessage(list);
    default:
      return fail(`unknown message kind ${String(kind)}`);
  }
}

/** Parse one decoded message array received by a server (client -> server kinds). */
export function parseClientMessage(fields: unknown): ClientMessage {
  const list = checkArray(fields);
  const kind = list[0];
  switch (kind) {
    case MessageKind.HELLO:
      return parseHello(list);
    case MessageKind.INVOKE:
    case MessageKind.STREAM_INVOKE: {
      const streaming = kind === MessageKind.STREAM_INVOKE;
      if (streaming) arity(list, 6, 7, "STREAM_INVOKE");
      else arity(list, 4, 6, "INVOKE");
      const callArgs = args(list[3]);
      const callKwargs = kwargs(list[4]);
      const declared = list[streaming ? 6 : 5];
      return {
        kind: 2,
        callId: uint(list[1], "a call id"),
        method: str(list[2], "a method name"),
        args: callArgs,
        kwargs: callKwargs,
        credit: streaming ? credit(list[5]) : null,
        streams: declared === undefined ? null : streamDeclarations(declared, callArgs, callKwargs),
      };
    }
    case MessageKind.STREAM_ITEM:
    case MessageKind.STREAM_END:
    case MessageKind.STREAM_CREDIT:
    case MessageKind.STREAM_CANCEL:
      return parseStreamMessage(list);
    case MessageKind.NOTIFY:
      arity(list, 3, 4, "NOTIFY");
      return { kind: 3, method: str(list[1], "a method name"), args: args(list[2]), kwargs: kwargs(list[3]) };
    case MessageKind.RESULT:
      return parseResult(list);
    case MessageKind.ERROR:
      return parseError(list);
    case MessageKind.CLOSE:
      return parseClose(list);
    case MessageKind.SERVER_HEARTBEAT_ACK:
      arity(list, 2, 3, "SERVER_HEARTBEAT_ACK");
      return withAck({ kind: 10, sequence: uint(list[1], "a sequence") } as ServerHeartbeatAck, list, 2);
    case MessageKind.CLIENT_HEARTBEAT:
      arity(list, 3, 4, "CLIENT_HEARTBEAT");
      if (!isInt(list[2])) fail("client_time must be an integer");
      return withAck({ kind: 11, sequence: uint(list[1], "a sequence"), clientTime: list[2] } as ClientHeartbeat, list, 3);
    case MessageKind.RESUME:
      arity(list, 3, 4, "RESUME");
      return list.length > 3
        ? { kind: 21, token: sessionToken(list[1]), received: uint(list[2], "received"), sent: uint(list[3], "sent") }
        : { kind: 21, token: sessionToken(list[1]), received: uint(list[2], "received") };
    case MessageKind.ACK:
      return parseAck(list);
    case MessageKind.WELCOME:
    case MessageKind.RECEIVER_CALL:
    case MessageKind.CLIENT_INVOKE:
    case MessageKind.SERVER_HEARTBEAT:
    case MessageKind.CLIENT_HEARTBEAT_ACK:
    case MessageKind.SESSION:
    case MessageKind.RESUMED:
    case MessageKind.RESUME_REFUSED:
      return fail(`message kind ${kind} is never sent by a client`);
    default:
      return fail(`unknown message kind ${String(kind)}`);
  }
}

function checkArray(fields: unknown): unknown[] {
  if (!Array.isArray(fields)) fail("a message must be an array");
  if (fields.length === 0) fail("a message must be a non-empty array");
  if (!isUint(fields[0])) fail("the message kind must be a non-negative integer");
  return fields;
}

/** Kinds whose last element may be a kwargs map, and its index. */
const KWARGS_INDEX: Record<number, number> = { 2: 4, 3: 3, 6: 3, 7: 4 };

/**
 * Decode one frame payload into its message arrays (one or more msgpack
 * values back to back) and parse each with `parse`.  Throws
 * {@link ProtocolError} for anything that is not a valid frame, and
 * {@link TooManyMessagesError} past `maxMessages` messages (counted while
 * decoding: the rest is not decoded).
 */
export function decodeFrame<T>(payload: Uint8Array, parse: (fields: unknown) => T, maxMessages = Infinity): T[] {
  if (payload.length === 0) fail("an empty frame");
  const messages: T[] = [];
  const keysBefore = nonStringKeys;
  try {
    for (const value of decoder.decodeMulti(payload)) {
      if (messages.length >= maxMessages) throw new TooManyMessagesError(maxMessages);
      messages.push(parse(value));
    }
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    if (e instanceof DecodeError || e instanceof RangeError) {
      throw new ProtocolError(`not valid msgpack: ${e.message}`);
    }
    throw e;
  }
  // Rare: some map had a non-str key.  Look again, keys tagged by kind, to
  // find out whether it was a kwargs map (a protocol error) or a value.
  if (nonStringKeys !== keysBefore) checkKwargsKeys(payload);
  return messages;
}

function checkKwargsKeys(payload: Uint8Array): void {
  for (const value of taggingDecoder.decodeMulti(payload)) {
    if (!Array.isArray(value)) continue;
    const index = KWARGS_INDEX[value[0] as number];
    if (index === undefined) continue;
    const map = value[index];
    if (isMap(map) && Object.keys(map).some((key) => !key.startsWith("s"))) {
      fail("kwargs keys must be str");
    }
  }
}

/**
 * A close reason that fits a WebSocket close frame: at most 123 bytes of
 * UTF-8, cut at a character boundary.
 */
export function closeReason(reason: string): string {
  const bytes = new TextEncoder().encode(reason);
  if (bytes.length <= 123) return reason;
  let end = 123;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return new TextDecoder().decode(bytes.subarray(0, end));
}
