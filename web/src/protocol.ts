// Wire types and frame parsing for the browser WebSocket of protocol v1
// (shared/protocol-v1.md, sections 1 and 4). Parsing is strict about what
// the contract requires and lenient about everything else: unknown fields
// are kept and passed on, as section 1 demands.

export type VoiceEventType = 'voice.left' | 'voice.joined' | 'voice.moved';

export const VOICE_EVENT_TYPES: readonly VoiceEventType[] = ['voice.left', 'voice.joined', 'voice.moved'];

/** The event of section 1. `id`/`previousChannelId`/`occurredAt` may be absent in a payload. */
export interface VoiceEvent {
  id?: string;
  type: VoiceEventType;
  guildId: string;
  userId: string;
  channelId: string | null;
  previousChannelId?: string | null;
  occurredAt?: string;
  readonly [extra: string]: unknown;
}

export type Scope = 'guild' | 'self';

export interface AuthFrame {
  v: 1;
  type: 'auth';
  token: string;
  resume?: { cursor: string };
  scope?: Scope;
}

export interface ClientPingFrame {
  v: 1;
  type: 'ping';
}

export type ClientFrame = AuthFrame | ClientPingFrame;

export interface AckFrame {
  v: 1;
  type: 'ack';
  event: 'auth.ok';
  cursor: string;
  recovered: boolean;
}

export interface EventFrame {
  v: 1;
  type: 'event';
  event: VoiceEventType;
  cursor: string;
  payload: VoiceEvent;
}

export interface PingFrame {
  v: 1;
  type: 'ping';
}

export interface PongFrame {
  v: 1;
  type: 'pong';
}

export interface ErrorFrame {
  v: 1;
  type: 'error';
  code: string;
  message: string;
}

export type ServerFrame = AckFrame | EventFrame | PingFrame | PongFrame | ErrorFrame;

export type ParseResult<T> = { ok: true; frame: T } | { ok: false; reason: string };

export const CloseCode = {
  Normal: 1000,
  ServiceRestart: 1012,
  ProtocolViolation: 4000,
  AuthFailed: 4001,
  AuthTimeout: 4002,
  TokenExpired: 4003,
  SlowConsumer: 4008,
  RateLimited: 4029,
} as const;

const SNOWFLAKE_DIGITS = /^[1-9][0-9]{0,19}$/;
const U64_MAX = 18446744073709551615n;
const EVENT_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** RFC 3339 in UTC (`Z` or `+00:00`) with at least millisecond precision. */
const OCCURRED_AT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3,9}(Z|\+00:00)$/;

/** A Discord snowflake as the contract writes it: decimal, no leading zero, non-zero, fits in u64. */
export function isSnowflake(x: unknown): x is string {
  return typeof x === 'string' && SNOWFLAKE_DIGITS.test(x) && BigInt(x) <= U64_MAX;
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function isVoiceEventType(x: unknown): x is VoiceEventType {
  return typeof x === 'string' && (VOICE_EVENT_TYPES as readonly string[]).includes(x);
}

function isNullableSnowflake(x: unknown): boolean {
  return x === null || isSnowflake(x);
}

/**
 * Validates an event. `strict` applies every rule of section 1 (what
 * producers must emit: id, occurredAt and previousChannelId present and well
 * formed). Without it — for the payload of an event frame, which section 4
 * only requires to carry guildId, userId and channelId — optional fields are
 * checked only for type, so that a consumer never drops a real dropout over
 * a cosmetic difference. `frameType` is the `event` field of the carrying
 * frame; the payload's own `type`, when present, must agree.
 */
export function parseVoiceEvent(
  x: unknown,
  options: { frameType?: VoiceEventType; strict?: boolean } = {},
): ParseResult<VoiceEvent> {
  const { frameType, strict = false } = options;
  if (!isRecord(x)) return { ok: false, reason: 'payload is not an object' };
  const type = x['type'] ?? frameType;
  if (!isVoiceEventType(type)) return { ok: false, reason: 'unknown event type' };
  if (frameType !== undefined && type !== frameType) return { ok: false, reason: 'payload type differs from frame event' };
  const { guildId, userId, channelId, previousChannelId, id, occurredAt } = x;
  if (!isSnowflake(guildId)) return { ok: false, reason: 'bad guildId' };
  if (!isSnowflake(userId)) return { ok: false, reason: 'bad userId' };
  if (!('channelId' in x) || !isNullableSnowflake(channelId)) return { ok: false, reason: 'bad channelId' };
  if (type === 'voice.left' && channelId !== null) return { ok: false, reason: 'voice.left needs channelId null' };
  if (type !== 'voice.left' && channelId === null) return { ok: false, reason: `${type} needs a channelId` };
  if (previousChannelId !== undefined && !isNullableSnowflake(previousChannelId)) {
    return { ok: false, reason: 'bad previousChannelId' };
  }
  if (id !== undefined && (typeof id !== 'string' || !EVENT_ID.test(id))) return { ok: false, reason: 'bad id' };
  if (occurredAt !== undefined && typeof occurredAt !== 'string') return { ok: false, reason: 'bad occurredAt' };
  if (strict) {
    if (id === undefined) return { ok: false, reason: 'missing id' };
    if (previousChannelId === undefined) return { ok: false, reason: 'missing previousChannelId' };
    if (typeof occurredAt !== 'string' || !OCCURRED_AT.test(occurredAt) || Number.isNaN(Date.parse(occurredAt))) {
      return { ok: false, reason: 'bad occurredAt' };
    }
    if (type === 'voice.joined' && previousChannelId !== null) return { ok: false, reason: 'voice.joined with a previous channel' };
    if (type === 'voice.moved' && previousChannelId === channelId) return { ok: false, reason: 'voice.moved to the same channel' };
  }
  return { ok: true, frame: { ...x, type } as VoiceEvent };
}

/** Parses one text frame sent by the server. */
export function parseServerFrame(text: string): ParseResult<ServerFrame> {
  let x: unknown;
  try {
    x = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'not JSON' };
  }
  if (!isRecord(x)) return { ok: false, reason: 'not an object' };
  if (x['v'] !== 1) return { ok: false, reason: 'unsupported version' };
  switch (x['type']) {
    case 'ack': {
      if (x['event'] !== 'auth.ok') return { ok: false, reason: 'unknown ack event' };
      if (typeof x['cursor'] !== 'string') return { ok: false, reason: 'ack without cursor' };
      if (typeof x['recovered'] !== 'boolean') return { ok: false, reason: 'ack without recovered' };
      return { ok: true, frame: { v: 1, type: 'ack', event: 'auth.ok', cursor: x['cursor'], recovered: x['recovered'] } };
    }
    case 'event': {
      const event = x['event'];
      if (!isVoiceEventType(event)) return { ok: false, reason: 'unknown event' };
      if (typeof x['cursor'] !== 'string') return { ok: false, reason: 'event without cursor' };
      const payload = parseVoiceEvent(x['payload'], { frameType: event });
      if (!payload.ok) return payload;
      return { ok: true, frame: { v: 1, type: 'event', event, cursor: x['cursor'], payload: payload.frame } };
    }
    case 'ping':
      return { ok: true, frame: { v: 1, type: 'ping' } };
    case 'pong':
      return { ok: true, frame: { v: 1, type: 'pong' } };
    case 'error': {
      if (typeof x['code'] !== 'string') return { ok: false, reason: 'error without code' };
      if (typeof x['message'] !== 'string') return { ok: false, reason: 'error without message' };
      return { ok: true, frame: { v: 1, type: 'error', code: x['code'], message: x['message'] } };
    }
    default:
      return { ok: false, reason: 'unknown frame type' };
  }
}

/** Parses a client frame (used by tests and the mock server; the client only builds them). */
export function parseClientFrame(text: string): ParseResult<ClientFrame> {
  let x: unknown;
  try {
    x = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'not JSON' };
  }
  if (!isRecord(x)) return { ok: false, reason: 'not an object' };
  if (x['v'] !== 1) return { ok: false, reason: 'unsupported version' };
  if (x['type'] === 'ping') return { ok: true, frame: { v: 1, type: 'ping' } };
  if (x['type'] !== 'auth') return { ok: false, reason: 'unknown frame type' };
  const token = x['token'];
  if (typeof token !== 'string' || token.length === 0) return { ok: false, reason: 'auth without token' };
  const frame: AuthFrame = { v: 1, type: 'auth', token };
  if ('resume' in x) {
    const resume = x['resume'];
    if (!isRecord(resume) || typeof resume['cursor'] !== 'string') return { ok: false, reason: 'bad resume' };
    frame.resume = { cursor: resume['cursor'] };
  }
  if ('scope' in x) {
    const scope = x['scope'];
    if (scope !== 'guild' && scope !== 'self') return { ok: false, reason: 'bad scope' };
    frame.scope = scope;
  }
  return { ok: true, frame };
}
