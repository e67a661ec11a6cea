/**
 * Errors and disconnect reasons: the same codes and kinds as the Python
 * client (twisted_hub._core.errors).
 */
import { CloseCode, ErrorCode } from "./wire.js";

/**
 * An error answer from the hub (or a receiver method): `code` is a library
 * code (`internal`, `unknown-method`, `invalid-arguments`,
 * `too-many-pending`, `timeout`, `disconnected`) or the application's own
 * (Python's `HubError(code, message, detail)`).
 */
export class HubError extends Error {
  constructor(
    readonly code: string,
    message = "",
    readonly detail: unknown = null,
  ) {
    super(message ? `[${code}] ${message}` : code);
    this.name = "HubError";
    this.hubMessage = message;
  }
  /** the message as the hub sent it (without the code) */
  readonly hubMessage: string;
}

/** A call got no answer within its timeout. */
export class CallTimeoutError extends HubError {
  constructor(message = "no answer in time") {
    super(ErrorCode.TIMEOUT, message);
    this.name = "CallTimeoutError";
  }
}

/** Why a connection ended (Python's `DisconnectKind`, same strings). */
export const DisconnectKind = {
  /** one side closed it on purpose (1000) */
  NORMAL: "normal",
  /** the server is shutting down, or the page navigated away (1001) */
  GOING_AWAY: "going-away",
  /** the server closed this connection on purpose, with a reason (4000) */
  KICKED: "kicked",
  /** our own heartbeat got no answer in time: the server is gone */
  TIMED_OUT: "timed-out",
  /** the server's heartbeat timed us out (4001) */
  PEER_TIMED_OUT: "peer-timed-out",
  /** a side sent bytes that are not this protocol (4002, 1002, 1003, 1007), or too many messages in one frame (1008) */
  PROTOCOL_ERROR: "protocol-error",
  /** a message was larger than the receiver's limit (1009) */
  MESSAGE_TOO_BIG: "message-too-big",
  /** the server dropped a client that did not read its data (4004) */
  SLOW_CONSUMER: "slow-consumer",
  /** the opening handshake failed (HTTP refusal, wrong subprotocol, no WELCOME) */
  HANDSHAKE_FAILED: "handshake-failed",
  /** the transport went away without a closing handshake (1006) */
  CONNECTION_LOST: "connection-lost",
  /** the server closed the connection: its access token expired (4005) */
  TOKEN_EXPIRED: "token-expired",
} as const;
export type DisconnectKind = (typeof DisconnectKind)[keyof typeof DisconnectKind];

/** How and why a connection ended. */
export interface DisconnectReason {
  kind: DisconnectKind;
  /** the WebSocket close code, if one was exchanged */
  code: number | null;
  /** human-readable detail (kick reason, protocol error, refusal ...) */
  message: string;
  /** true when this side decided to close */
  locally: boolean;
}

export function describeReason(reason: DisconnectReason): string {
  return reason.message ? `${reason.kind}: ${reason.message}` : reason.kind;
}

/**
 * A call cannot complete because its connection is closed.  `mayHaveRun`
 * (Python's `may_have_run`): true when the call had been handed to the
 * connection before it ended, so the server may have run it and its answer
 * was lost (retry only what is safe to run twice); false when it was never
 * sent.
 */
export class ConnectionClosedError extends HubError {
  constructor(
    readonly reason: DisconnectReason,
    readonly mayHaveRun = false,
  ) {
    super(ErrorCode.DISCONNECTED, `connection closed (${describeReason(reason)})${mayHaveRun ? "; the call may have run" : ""}`);
    this.name = "ConnectionClosedError";
  }
}

/**
 * The WebSocket or hub handshake failed.  `status` is the HTTP status when
 * the runtime reports it (Node's `ws` does; browsers never expose it), else
 * null.
 */
export class HandshakeError extends Error {
  constructor(
    readonly status: number | null,
    readonly reason: string,
  ) {
    super(`handshake refused (${status ?? "no status"}): ${reason}`);
    this.name = "HandshakeError";
  }
}

// Exactly twisted_hub._core.errors._CLOSE_KINDS: tests/test_javascript.py
// compares kindForClose with Python's kind_for_close code by code.
const CLOSE_KINDS: Record<number, DisconnectKind> = {
  [CloseCode.NORMAL]: DisconnectKind.NORMAL,
  [CloseCode.GOING_AWAY]: DisconnectKind.GOING_AWAY,
  [CloseCode.UNSUPPORTED_DATA]: DisconnectKind.PROTOCOL_ERROR,
  [CloseCode.POLICY_VIOLATION]: DisconnectKind.PROTOCOL_ERROR,
  [CloseCode.PROTOCOL_ERROR]: DisconnectKind.PROTOCOL_ERROR,
  1002: DisconnectKind.PROTOCOL_ERROR,
  1007: DisconnectKind.PROTOCOL_ERROR,
  [CloseCode.MESSAGE_TOO_BIG]: DisconnectKind.MESSAGE_TOO_BIG,
  [CloseCode.KICKED]: DisconnectKind.KICKED,
  [CloseCode.SLOW_CONSUMER]: DisconnectKind.SLOW_CONSUMER,
  [CloseCode.HANDSHAKE_FAILED]: DisconnectKind.HANDSHAKE_FAILED,
  [CloseCode.TOKEN_EXPIRED]: DisconnectKind.TOKEN_EXPIRED,
  [CloseCode.ABNORMAL]: DisconnectKind.CONNECTION_LOST,
};

/** Map a close code to a kind, as one side sees it (Python's `kind_for_close`). */
export function kindForClose(code: number | null, locally: boolean): DisconnectKind {
  if (code === null) return DisconnectKind.CONNECTION_LOST;
  if (code === CloseCode.HEARTBEAT_TIMEOUT) return locally ? DisconnectKind.TIMED_OUT : DisconnectKind.PEER_TIMED_OUT;
  return CLOSE_KINDS[code] ?? DisconnectKind.NORMAL;
}
