// VoiceEventsClient: a framework-free client for the browser WebSocket of
// protocol v1 (shared/protocol-v1.md, section 4). It authenticates, keeps
// the last cursor and resumes with it, reconnects with capped exponential
// backoff and full jitter, detects dead connections from missing heartbeats
// and never delivers the same event twice.

import { LruSet } from './lru.ts';
import {
  CloseCode,
  parseServerFrame,
  type AuthFrame,
  type ClientFrame,
  type ErrorFrame,
  type Scope,
  type ServerFrame,
  type VoiceEvent,
} from './protocol.ts';

export type ConnectionStatus = 'connecting' | 'open' | 'reconnecting' | 'closed' | 'failed';

/** The part of the WebSocket API the client uses; the browser's WebSocket fits it. */
export interface WebSocketLike {
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export type VoiceEventsErrorCode =
  /** The server sent an `error` frame and/or closed with 4000. */
  | 'protocol_violation'
  /** Close 4001: the token was refused; a new one is fetched before the next try. */
  | 'auth_failed'
  /** Close 4029: rate or connection limit. */
  | 'rate_limited'
  /** `getToken` rejected or returned something that is not a non-empty string. */
  | 'token_error'
  /** The server sent a frame that does not parse as protocol v1. */
  | 'bad_frame'
  /** A resume could not replay every missed event (`recovered: false`). */
  | 'resume_gap'
  /** Five reconnect attempts in a row failed: the client stopped trying. */
  | 'gave_up';

export class VoiceEventsError extends Error {
  override readonly name = 'VoiceEventsError';
  constructor(
    readonly code: VoiceEventsErrorCode,
    message: string,
    readonly details: {
      closeCode?: number;
      /** `code` of the server's `error` frame, when it sent one. */
      serverCode?: string;
      /** True when the client stopped for good (status `failed`). */
      fatal?: boolean;
    } = {},
  ) {
    super(message);
  }

  get fatal(): boolean {
    return this.details.fatal === true;
  }
}

export interface EventMeta {
  cursor: string;
  /** True for events the server replayed on resume, before its ack. */
  replayed: boolean;
}

export interface OpenInfo {
  cursor: string;
  /** Whether the auth frame carried a resume cursor. */
  resumed: boolean;
  /** The server's `recovered` flag: every event after the resume cursor was replayed. */
  recovered: boolean;
}

export interface BackoffOptions {
  /** First delay cap, doubled at each consecutive failure. Default 1000 ms. */
  baseMs?: number;
  /** Largest delay cap. Default 16000 ms. */
  maxMs?: number;
  /** Failed reconnect attempts in a row before giving up. Default 5. */
  maxAttempts?: number;
}

export interface VoiceEventsClientOptions {
  /** `ws://` / `wss://` URL, or a path such as `/api/ws` resolved against `location`. */
  url: string;
  /** Supplies a token; called on the first connect and again after close 4001/4003. */
  getToken: () => Promise<string>;
  scope?: Scope;
  /** Resume from this cursor on the first connect (e.g. one saved across page loads). */
  cursor?: string;
  onEvent?: (event: VoiceEvent, meta: EventMeta) => void;
  onStatus?: (status: ConnectionStatus) => void;
  onOpen?: (info: OpenInfo) => void;
  onError?: (error: VoiceEventsError) => void;
  backoff?: BackoffOptions;
  /** The server's heartbeat interval. Default 25000 ms (the contract's default). */
  heartbeatIntervalMs?: number;
  /** The connection is dead after this many heartbeat intervals without any frame. Default 2. */
  missedHeartbeats?: number;
  /** Interval of client pings once open; 0 disables them. Default: heartbeatIntervalMs. */
  pingIntervalMs?: number;
  /** From opening the socket to the server's ack; past it the attempt fails. Default 15000 ms. */
  handshakeTimeoutMs?: number;
  /**
   * When the token is a JWT with `exp`, fetch a new one this long before it
   * expires and send it as a new auth frame on the open connection (the
   * contract's in-band refresh), so the edge never has to close with 4003.
   * 0 disables it. Default 60000 ms.
   */
  refreshBeforeExpiryMs?: number;
  /** Wall clock in ms, for token expiry. Default Date.now. */
  now?: () => number;
  /** How many event ids and cursors are remembered for de-duplication. Default 2048. */
  dedupeCapacity?: number;
  WebSocket?: WebSocketConstructor;
  timers?: Timers;
  /** Random source in [0, 1) for the jitter. Default Math.random. */
  random?: () => number;
}

const defaultTimers: Timers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>),
};

/** Resolves a path like `/api/ws` against the page's origin (http → ws, https → wss). */
export function resolveWsUrl(url: string, base?: { protocol: string; host: string }): string {
  if (/^wss?:\/\//i.test(url)) return url;
  if (/^https?:\/\//i.test(url)) return url.replace(/^http/i, 'ws');
  const loc = base ?? (globalThis as { location?: { protocol: string; host: string } }).location;
  if (loc === undefined) throw new TypeError(`cannot resolve relative WebSocket URL ${url} without a location`);
  const scheme = loc.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${loc.host}${url.startsWith('/') ? '' : '/'}${url}`;
}

/** The full-jitter delay before reconnect attempt `attempt` (0-based): random() * min(max, base * 2^attempt). */
export function backoffDelay(attempt: number, random: () => number, baseMs = 1000, maxMs = 16_000): number {
  const cap = Math.min(maxMs, baseMs * 2 ** attempt);
  return Math.floor(random() * cap);
}

export interface CloseReaction {
  /** Reconnect (with the backoff schedule) and resume from the last cursor. */
  reconnect: boolean;
  /** Drop the current token and get a new one from getToken before the next try. */
  newToken: boolean;
  /** Reported through onError with this code. */
  report: VoiceEventsErrorCode | null;
}

/**
 * The reaction to each close code of protocol v1, section 4. Codes not in
 * the table (1001, 1006, 1011…) are treated as transient: reconnect, resume.
 */
export const CLOSE_REACTIONS: Readonly<Record<number, CloseReaction>> = {
  1000: { reconnect: false, newToken: false, report: null },
  1012: { reconnect: true, newToken: false, report: null },
  4000: { reconnect: true, newToken: false, report: 'protocol_violation' },
  4001: { reconnect: true, newToken: true, report: 'auth_failed' },
  4002: { reconnect: true, newToken: false, report: null },
  4003: { reconnect: true, newToken: true, report: null },
  4008: { reconnect: true, newToken: false, report: null },
  4029: { reconnect: true, newToken: false, report: 'rate_limited' },
};

const TRANSIENT: CloseReaction = { reconnect: true, newToken: false, report: null };

export function closeReaction(code: number): CloseReaction {
  return CLOSE_REACTIONS[code] ?? TRANSIENT;
}

type Loss =
  | { kind: 'close'; code: number; reason: string }
  | { kind: 'dead' }
  | { kind: 'handshake_timeout' }
  | { kind: 'socket_error'; message: string };

export class VoiceEventsClient {
  private readonly opts: VoiceEventsClientOptions;
  private readonly WS: WebSocketConstructor;
  private readonly timers: Timers;
  private readonly random: () => number;
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly maxAttempts: number;
  private readonly deadAfterMs: number;
  private readonly pingIntervalMs: number;
  private readonly handshakeTimeoutMs: number;
  private readonly refreshBeforeExpiryMs: number;
  private readonly now: () => number;
  private readonly seen: LruSet;
  private readonly listeners = new Set<(status: ConnectionStatus) => void>();

  private _status: ConnectionStatus = 'closed';
  private _cursor: string | undefined;
  private token: string | null = null;
  private ws: WebSocketLike | null = null;
  /** Incremented for every socket; callbacks of older sockets are ignored. */
  private generation = 0;
  /** Reconnect attempts since the last successful auth. */
  private attempt = 0;
  private authed = false;
  private started = false;
  private stopped = false;
  private resumedWith: string | undefined;
  private serverError: ErrorFrame | null = null;
  private retryTimer: unknown = null;
  private handshakeTimer: unknown = null;
  private deadTimer: unknown = null;
  private pingTimer: unknown = null;
  private refreshTimer: unknown = null;

  constructor(options: VoiceEventsClientOptions) {
    this.opts = options;
    const ws = options.WebSocket ?? (globalThis as { WebSocket?: unknown }).WebSocket;
    if (typeof ws !== 'function') throw new TypeError('no WebSocket implementation available');
    this.WS = ws as WebSocketConstructor;
    this.timers = options.timers ?? defaultTimers;
    this.random = options.random ?? Math.random;
    this.baseMs = options.backoff?.baseMs ?? 1000;
    this.maxMs = options.backoff?.maxMs ?? 16_000;
    this.maxAttempts = options.backoff?.maxAttempts ?? 5;
    const heartbeat = options.heartbeatIntervalMs ?? 25_000;
    this.deadAfterMs = heartbeat * (options.missedHeartbeats ?? 2);
    this.pingIntervalMs = options.pingIntervalMs ?? heartbeat;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? 15_000;
    this.refreshBeforeExpiryMs = options.refreshBeforeExpiryMs ?? 60_000;
    this.now = options.now ?? (() => Date.now());
    this.seen = new LruSet(options.dedupeCapacity ?? 2048);
    this._cursor = options.cursor;
  }

  get status(): ConnectionStatus {
    return this._status;
  }

  /** The last cursor seen (from an event or an ack); sent back on resume. */
  get cursor(): string | undefined {
    return this._cursor;
  }

  /** Calls `listener` on every status change; returns the unsubscribe function. */
  subscribe(listener: (status: ConnectionStatus) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** Connects; does nothing when already started. */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    void this.connect();
  }

  /** After `failed` (or to skip a pending backoff wait): tries again now with a fresh attempt count. */
  reconnect(): void {
    if (this.stopped) return;
    this.started = true;
    this.attempt = 0;
    this.clearTimer('retryTimer');
    this.dropSocket(1000, 'reconnect');
    void this.connect();
  }

  /** Closes for good (code 1000); no further callbacks. */
  close(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.clearTimer('retryTimer');
    this.dropSocket(CloseCode.Normal, 'client closed');
    this.setStatus('closed');
  }

  private setStatus(status: ConnectionStatus): void {
    if (status === this._status) return;
    this._status = status;
    this.opts.onStatus?.(status);
    for (const listener of [...this.listeners]) listener(status);
  }

  private report(error: VoiceEventsError): void {
    this.opts.onError?.(error);
  }

  private clearTimer(name: 'retryTimer' | 'handshakeTimer' | 'deadTimer' | 'pingTimer' | 'refreshTimer'): void {
    if (this[name] !== null) {
      this.timers.clearTimeout(this[name]);
      this[name] = null;
    }
  }

  private async fetchToken(): Promise<string> {
    if (this.token !== null) return this.token;
    const token = await this.opts.getToken();
    if (typeof token !== 'string' || token.length === 0) throw new Error('getToken returned an empty token');
    this.token = token;
    return token;
  }

  private async connect(): Promise<void> {
    const gen = ++this.generation;
    this.setStatus(this.attempt === 0 && this._status !== 'reconnecting' && this._status !== 'failed' ? 'connecting' : 'reconnecting');
    let token: string;
    try {
      token = await this.fetchToken();
    } catch (err) {
      if (gen !== this.generation || this.stopped) return;
      this.report(new VoiceEventsError('token_error', `could not get a token: ${errorMessage(err)}`));
      this.lost(gen, { kind: 'socket_error', message: 'no token' });
      return;
    }
    if (gen !== this.generation || this.stopped) return;

    let ws: WebSocketLike;
    try {
      ws = new this.WS(resolveWsUrl(this.opts.url));
    } catch (err) {
      this.lost(gen, { kind: 'socket_error', message: errorMessage(err) });
      return;
    }
    this.ws = ws;
    this.authed = false;
    this.serverError = null;
    this.handshakeTimer = this.timers.setTimeout(() => {
      this.handshakeTimer = null;
      this.lost(gen, { kind: 'handshake_timeout' });
    }, this.handshakeTimeoutMs);

    ws.onopen = () => {
      if (gen !== this.generation) return;
      const frame: AuthFrame = { v: 1, type: 'auth', token };
      this.resumedWith = this._cursor;
      if (this._cursor !== undefined) frame.resume = { cursor: this._cursor };
      if (this.opts.scope !== undefined) frame.scope = this.opts.scope;
      this.send(frame);
    };
    ws.onmessage = (ev) => {
      if (gen !== this.generation) return;
      if (typeof ev.data !== 'string') {
        this.report(new VoiceEventsError('bad_frame', 'binary frame ignored'));
        return;
      }
      this.onFrame(gen, ev.data);
    };
    ws.onclose = (ev) => {
      if (gen !== this.generation) return;
      this.lost(gen, { kind: 'close', code: ev.code, reason: ev.reason });
    };
    ws.onerror = () => {
      // A close event always follows; the reaction happens there.
    };
  }

  private send(frame: ClientFrame): void {
    try {
      this.ws?.send(JSON.stringify(frame));
    } catch {
      // The socket is closing; its close event drives the reconnect.
    }
  }

  private onFrame(gen: number, text: string): void {
    const parsed = parseServerFrame(text);
    if (!parsed.ok) {
      this.report(new VoiceEventsError('bad_frame', `ignored a server frame: ${parsed.reason}`));
      return;
    }
    // Any frame proves the connection alive.
    if (this.authed) this.armDeadTimer(gen);
    const frame: ServerFrame = parsed.frame;
    switch (frame.type) {
      case 'ack':
        this.onAck(gen, frame.cursor, frame.recovered);
        return;
      case 'event': {
        const { payload, cursor } = frame;
        const replayed = !this.authed;
        this._cursor = cursor;
        const idKey = payload.id !== undefined ? `id:${payload.id}` : null;
        const cursorKey = `cursor:${cursor}`;
        const duplicate = (idKey !== null && this.seen.has(idKey)) || this.seen.has(cursorKey);
        if (idKey !== null) this.seen.add(idKey);
        this.seen.add(cursorKey);
        if (duplicate) return;
        this.opts.onEvent?.(payload, { cursor, replayed });
        return;
      }
      case 'ping':
      case 'pong':
        return;
      case 'error':
        this.serverError = frame;
        return;
    }
  }

  private onAck(gen: number, cursor: string, recovered: boolean): void {
    this._cursor = cursor;
    if (this.authed) return; // a re-auth on the same connection (token refresh)
    this.authed = true;
    this.attempt = 0;
    this.clearTimer('handshakeTimer');
    this.armDeadTimer(gen);
    this.armPingTimer(gen);
    this.setStatus('open');
    const resumed = this.resumedWith !== undefined;
    this.armRefreshTimer(gen);
    this.opts.onOpen?.({ cursor, resumed, recovered });
    if (resumed && !recovered) {
      this.report(new VoiceEventsError('resume_gap', 'the server could not replay every missed event'));
    }
  }

  private armDeadTimer(gen: number): void {
    this.clearTimer('deadTimer');
    this.deadTimer = this.timers.setTimeout(() => {
      this.deadTimer = null;
      this.lost(gen, { kind: 'dead' });
    }, this.deadAfterMs);
  }

  private armRefreshTimer(gen: number): void {
    this.clearTimer('refreshTimer');
    if (this.refreshBeforeExpiryMs <= 0 || this.token === null) return;
    const exp = jwtExpiry(this.token);
    if (exp === null) return;
    const delay = exp - this.refreshBeforeExpiryMs - this.now();
    // A token already inside the refresh window is left to the server's 4003.
    if (delay <= 0) return;
    this.refreshTimer = this.timers.setTimeout(() => {
      this.refreshTimer = null;
      void this.refreshInBand(gen);
    }, delay);
  }

  private async refreshInBand(gen: number): Promise<void> {
    const old = this.token;
    this.token = null;
    let token: string;
    try {
      token = await this.fetchToken();
    } catch (err) {
      if (gen !== this.generation) return;
      this.token = old;
      this.report(new VoiceEventsError('token_error', `could not refresh the token: ${errorMessage(err)}`));
      return;
    }
    if (gen !== this.generation || !this.authed) return;
    const frame: AuthFrame = { v: 1, type: 'auth', token };
    if (this.opts.scope !== undefined) frame.scope = this.opts.scope;
    this.send(frame);
    this.armRefreshTimer(gen);
  }

  private armPingTimer(gen: number): void {
    if (this.pingIntervalMs <= 0) return;
    this.clearTimer('pingTimer');
    this.pingTimer = this.timers.setTimeout(() => {
      this.pingTimer = null;
      if (gen !== this.generation) return;
      this.send({ v: 1, type: 'ping' });
      this.armPingTimer(gen);
    }, this.pingIntervalMs);
  }

  /** Detaches and closes the current socket without reacting to its close. */
  private dropSocket(code: number, reason: string): void {
    this.generation++;
    this.clearTimer('handshakeTimer');
    this.clearTimer('deadTimer');
    this.clearTimer('pingTimer');
    this.clearTimer('refreshTimer');
    const ws = this.ws;
    this.ws = null;
    this.authed = false;
    if (ws === null) return;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = null;
    try {
      ws.close(code, reason);
    } catch {
      // Already closed.
    }
  }

  private lost(gen: number, loss: Loss): void {
    if (gen !== this.generation || this.stopped) return;
    const serverError = this.serverError;
    this.serverError = null;
    this.dropSocket(CloseCode.Normal, loss.kind === 'dead' ? 'heartbeat timeout' : 'abandoned');
    const details = {
      ...(loss.kind === 'close' ? { closeCode: loss.code } : {}),
      ...(serverError !== null ? { serverCode: serverError.code } : {}),
    };
    const why = serverError !== null ? `${serverError.code}: ${serverError.message}` : loss.kind === 'close' ? loss.reason : '';

    if (loss.kind === 'close') {
      const reaction = closeReaction(loss.code);
      if (reaction.newToken) this.token = null;
      if (reaction.report !== null) {
        this.report(new VoiceEventsError(reaction.report, `server closed with ${loss.code}${why !== '' ? ` (${why})` : ''}`, details));
      } else if (serverError !== null && !reaction.reconnect) {
        this.report(new VoiceEventsError('protocol_violation', `server closed: ${why}`, details));
      }
      if (!reaction.reconnect) {
        this.started = false;
        this.setStatus('closed');
        return;
      }
    }
    this.scheduleRetry(details);
  }

  private scheduleRetry(details: { closeCode?: number; serverCode?: string }): void {
    if (this.attempt >= this.maxAttempts) {
      this.started = false;
      this.setStatus('failed');
      this.report(
        new VoiceEventsError('gave_up', `could not reconnect after ${this.maxAttempts} attempts`, { ...details, fatal: true }),
      );
      return;
    }
    let delay = backoffDelay(this.attempt, this.random, this.baseMs, this.maxMs);
    // "Reconnect later": a rate-limited client never comes straight back.
    if (details.closeCode === CloseCode.RateLimited) delay = Math.max(delay, this.baseMs);
    this.attempt++;
    this.setStatus('reconnecting');
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = null;
      void this.connect();
    }, delay);
  }
}

/** The `exp` claim of a JWT in ms, or null when the token is not a JWT with a numeric exp. */
export function jwtExpiry(token: string): number | null {
  const part = token.split('.')[1];
  if (part === undefined) return null;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json: unknown = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
    const exp = typeof json === 'object' && json !== null ? (json as { exp?: unknown }).exp : undefined;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
