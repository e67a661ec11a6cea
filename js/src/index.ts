/**
 * twisted-hub: the browser and Node client of twisted-hub hubs
 * (typed RPC over WebSocket + msgpack, with heartbeats and clock sync).
 */
export {
  HubClient,
  connect,
  hubUrl,
  type CallOptions,
  type Clock,
  type ClientHeartbeatEvent,
  type HubClientOptions,
  type HubProxy,
  type Logger,
  type Receiver,
  type ServerHeartbeatEvent,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./client.js";
export { ReconnectingHubClient, fullJitterDelay, type ReconnectingOptions, type RetryPolicy } from "./reconnect.js";
export type { ResumeOptions } from "./resume.js";
export {
  CallTimeoutError,
  ConnectionClosedError,
  DisconnectKind,
  HandshakeError,
  HubError,
  kindForClose,
  type DisconnectReason,
} from "./errors.js";
export { browserPage, type EventTargetLike, type PageLifecycle } from "./lifecycle.js";
export { HubStream, STREAM_WINDOW } from "./streams.js";
export { MAX_DEPTH, UnsendableValueError, encodeValue } from "./encode.js";
export { ClockSync, HeartbeatTracker, InputProgress, MIN_PROGRESS_BYTES, OutputProgress, StallDetector, type ClockOffset } from "./heartbeat.js";
export {
  BATCH_BYTES,
  BATCH_MESSAGES,
  CloseCode,
  ErrorCode,
  MAX_MESSAGES_PER_FRAME,
  MessageKind,
  ProtocolError,
  SUBPROTOCOL,
  TooManyMessagesError,
  decodeFrame,
  encodeMessage,
  parseClientMessage,
  parseServerMessage,
  type Kwargs,
} from "./wire.js";
