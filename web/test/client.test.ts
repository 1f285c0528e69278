import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  backoffDelay,
  jwtExpiry,
  resolveWsUrl,
  VoiceEventsClient,
  type ConnectionStatus,
  type EventMeta,
  type VoiceEventsClientOptions,
  type VoiceEventsError,
} from '../src/client.ts';
import type { VoiceEvent } from '../src/protocol.ts';
import { eventFrame, mockSockets, type MockSocket } from './mock-socket.ts';

interface Harness {
  client: VoiceEventsClient;
  sockets: MockSocket[];
  last(): MockSocket;
  events: { event: VoiceEvent; meta: EventMeta }[];
  errors: VoiceEventsError[];
  statuses: ConnectionStatus[];
  getToken: ReturnType<typeof vi.fn<() => Promise<string>>>;
  /** Opens the latest socket and acks its auth frame. */
  connect(cursor?: string, recovered?: boolean): Promise<MockSocket>;
}

function harness(over: Partial<VoiceEventsClientOptions> = {}): Harness {
  const ws = mockSockets();
  const events: Harness['events'] = [];
  const errors: VoiceEventsError[] = [];
  const statuses: ConnectionStatus[] = [];
  let n = 0;
  const getToken = vi.fn(() => Promise.resolve(`token-${++n}`));
  const client = new VoiceEventsClient({
    url: 'ws://edge.test/api/ws',
    getToken,
    WebSocket: ws.WebSocket,
    // Injected timers: the fake clock of vitest, reached through the seam.
    timers: { setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (h) => clearTimeout(h as number) },
    random: () => 0.5,
    onEvent: (event, meta) => events.push({ event, meta }),
    onError: (e) => errors.push(e),
    onStatus: (s) => statuses.push(s),
    ...over,
  });
  return {
    client,
    sockets: ws.sockets,
    last: ws.last,
    events,
    errors,
    statuses,
    getToken,
    async connect(cursor = 'c0', recovered = true) {
      await vi.advanceTimersByTimeAsync(0);
      const s = ws.last();
      s.open();
      s.ack(cursor, recovered);
      return s;
    },
  };
}

/** Advances the clock to just before `ms` and checks no socket appeared, then to `ms`. */
async function expectNewSocketAfter(h: Harness, ms: number): Promise<MockSocket> {
  const before = h.sockets.length;
  await vi.advanceTimersByTimeAsync(Math.max(0, ms - 1));
  expect(h.sockets.length, `no new socket before ${ms} ms`).toBe(before);
  await vi.advanceTimersByTimeAsync(1);
  expect(h.sockets.length, `a new socket at ${ms} ms`).toBe(before + 1);
  return h.last();
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('auth and resume', () => {
  it('sends the auth frame first, with scope, and no resume on a fresh start', async () => {
    const h = harness({ scope: 'self' });
    h.client.start();
    expect(h.client.status).toBe('connecting');
    await vi.advanceTimersByTimeAsync(0);
    const s = h.last();
    expect(s.url).toBe('ws://edge.test/api/ws');
    expect(s.sent).toEqual([]);
    s.open();
    expect(s.frames).toEqual([{ v: 1, type: 'auth', token: 'token-1', scope: 'self' }]);
    s.ack('c5', false);
    expect(h.client.status).toBe('open');
    expect(h.client.cursor).toBe('c5');
    // recovered=false without a resume cursor is not a gap.
    expect(h.errors).toEqual([]);
    expect(h.statuses).toEqual(['connecting', 'open']);
  });

  it('keeps the last cursor and resumes with it after a drop', async () => {
    const h = harness();
    h.client.start();
    const s1 = await h.connect('c0');
    s1.receive(eventFrame('voice.left', 'c1'));
    s1.receive(eventFrame('voice.joined', 'c2'));
    expect(h.client.cursor).toBe('c2');
    s1.serverClose(1006);
    expect(h.client.status).toBe('reconnecting');
    const s2 = await expectNewSocketAfter(h, 500);
    s2.open();
    expect(s2.frames[0]).toEqual({ v: 1, type: 'auth', token: 'token-1', resume: { cursor: 'c2' } });
    expect(h.getToken).toHaveBeenCalledTimes(1);
  });

  it('starts from a given cursor and reports a resume gap', async () => {
    const opened: unknown[] = [];
    const h = harness({ cursor: 'saved', onOpen: (i) => opened.push(i) });
    h.client.start();
    await vi.advanceTimersByTimeAsync(0);
    h.last().open();
    expect(h.last().frames[0]).toMatchObject({ resume: { cursor: 'saved' } });
    h.last().ack('c9', false);
    expect(opened).toEqual([{ cursor: 'c9', resumed: true, recovered: false }]);
    expect(h.errors.map((e) => e.code)).toEqual(['resume_gap']);
  });

  it('delivers events replayed before the ack, flagged as replayed', async () => {
    const h = harness({ cursor: 'c1' });
    h.client.start();
    await vi.advanceTimersByTimeAsync(0);
    const s = h.last();
    s.open();
    s.receive(eventFrame('voice.left', 'c2'));
    s.ack('c2', true);
    s.receive(eventFrame('voice.joined', 'c3'));
    expect(h.events.map((e) => [e.event.type, e.meta.replayed])).toEqual([
      ['voice.left', true],
      ['voice.joined', false],
    ]);
    expect(h.errors).toEqual([]);
  });

  it('resolves relative URLs against the page origin', () => {
    expect(resolveWsUrl('/api/ws', { protocol: 'http:', host: '127.0.0.1:8080' })).toBe('ws://127.0.0.1:8080/api/ws');
    expect(resolveWsUrl('/api/ws', { protocol: 'https:', host: 'a.test' })).toBe('wss://a.test/api/ws');
    expect(resolveWsUrl('wss://b.test/x')).toBe('wss://b.test/x');
    expect(resolveWsUrl('http://c.test/api/ws')).toBe('ws://c.test/api/ws');
  });
});

describe('de-duplication', () => {
  it('never delivers an event id twice across reconnects', async () => {
    const h = harness();
    h.client.start();
    const s1 = await h.connect();
    const left = eventFrame('voice.left', 'c1');
    s1.receive(left);
    s1.serverClose(1012);
    await vi.advanceTimersByTimeAsync(500);
    const s2 = h.last();
    s2.open();
    // The server replays the same event under another cursor.
    s2.receive({ ...left, cursor: 'c1-replay' });
    s2.ack('c1-replay');
    expect(h.events).toHaveLength(1);
    expect(h.client.cursor).toBe('c1-replay');
  });

  it('drops a second frame with an already seen cursor (payload without id)', async () => {
    const h = harness();
    h.client.start();
    const s = await h.connect();
    s.receive(eventFrame('voice.left', 'c7', { id: undefined }));
    s.receive(eventFrame('voice.left', 'c7', { id: undefined }));
    s.receive(eventFrame('voice.left', 'c8', { id: undefined }));
    expect(h.events.map((e) => e.meta.cursor)).toEqual(['c7', 'c8']);
  });

  it('remembers a bounded number of keys (LRU)', async () => {
    const h = harness({ dedupeCapacity: 4 });
    h.client.start();
    const s = await h.connect();
    const first = eventFrame('voice.left', 'a');
    s.receive(first);
    s.receive(first);
    expect(h.events).toHaveLength(1);
    // Two more events (four keys) push the first event's keys out.
    s.receive(eventFrame('voice.joined', 'b'));
    s.receive(eventFrame('voice.joined', 'c'));
    s.receive(first);
    expect(h.events).toHaveLength(4);
  });
});

describe('backoff', () => {
  it('computes full-jitter delays capped at 1, 2, 4, 8, 16 s', () => {
    expect([0, 1, 2, 3, 4, 5, 9].map((a) => backoffDelay(a, () => 0.999999))).toEqual([
      999, 1999, 3999, 7999, 15999, 15999, 15999,
    ]);
    expect([0, 1, 2, 3, 4].map((a) => backoffDelay(a, () => 0))).toEqual([0, 0, 0, 0, 0]);
    expect([0, 1, 2, 3, 4].map((a) => backoffDelay(a, () => 0.25))).toEqual([250, 500, 1000, 2000, 4000]);
  });

  it('waits random() * cap before each attempt and gives up after 5 failures in a row', async () => {
    const h = harness({ random: () => 0.999 });
    h.client.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(h.sockets).toHaveLength(1);
    h.last().serverClose(1006); // the initial connection fails
    for (const delay of [999, 1998, 3996, 7992, 15984]) {
      expect(h.client.status).toBe('reconnecting');
      const s = await expectNewSocketAfter(h, delay);
      s.serverClose(1006);
    }
    expect(h.client.status).toBe('failed');
    expect(h.errors.map((e) => [e.code, e.fatal])).toEqual([['gave_up', true]]);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(h.sockets).toHaveLength(6);
    // An explicit reconnect starts over.
    h.client.reconnect();
    await vi.advanceTimersByTimeAsync(0);
    expect(h.sockets).toHaveLength(7);
    expect(h.client.status).toBe('reconnecting');
    h.last().open();
    h.last().ack();
    expect(h.client.status).toBe('open');
  });

  it('uses the injected random source for each delay', async () => {
    const draws = [0.1, 0.9, 0.3];
    const h = harness({ random: () => draws.shift() ?? 0 });
    h.client.start();
    await vi.advanceTimersByTimeAsync(0);
    h.last().serverClose(1006);
    (await expectNewSocketAfter(h, 100)).serverClose(1006); // 0.1 * 1000
    (await expectNewSocketAfter(h, 1800)).serverClose(1006); // 0.9 * 2000
    await expectNewSocketAfter(h, 1200); // 0.3 * 4000
  });

  it('resets the failure count on a successful auth', async () => {
    const h = harness({ random: () => 0.999 });
    h.client.start();
    await vi.advanceTimersByTimeAsync(0);
    h.last().serverClose(1006);
    (await expectNewSocketAfter(h, 999)).serverClose(1006);
    (await expectNewSocketAfter(h, 1998)).serverClose(1006);
    const s = await expectNewSocketAfter(h, 3996);
    s.open();
    s.ack();
    expect(h.client.status).toBe('open');
    s.serverClose(1006);
    // Back to the first step, and five more failures are allowed.
    for (const delay of [999, 1998, 3996, 7992, 15984]) {
      (await expectNewSocketAfter(h, delay)).serverClose(1006);
    }
    expect(h.client.status).toBe('failed');
  });
});

describe('close codes', () => {
  it('1000: does nothing more', async () => {
    const h = harness();
    h.client.start();
    const s = await h.connect();
    s.serverClose(1000);
    expect(h.client.status).toBe('closed');
    await vi.advanceTimersByTimeAsync(120_000);
    expect(h.sockets).toHaveLength(1);
    expect(h.errors).toEqual([]);
  });

  it('1012: reconnects with jitter and resumes, same token', async () => {
    const h = harness({ random: () => 0.3 });
    h.client.start();
    const s = await h.connect('c3');
    s.serverClose(1012);
    const s2 = await expectNewSocketAfter(h, 300);
    s2.open();
    expect(s2.frames[0]).toEqual({ v: 1, type: 'auth', token: 'token-1', resume: { cursor: 'c3' } });
    expect(h.errors).toEqual([]);
  });

  it('4000: reports (with the error frame) and reconnects with backoff', async () => {
    const h = harness();
    h.client.start();
    const s = await h.connect();
    s.receive({ v: 1, type: 'error', code: 'bad_frame', message: 'unknown type' });
    s.serverClose(4000);
    expect(h.errors).toHaveLength(1);
    expect(h.errors[0]?.code).toBe('protocol_violation');
    expect(h.errors[0]?.details).toEqual({ closeCode: 4000, serverCode: 'bad_frame' });
    expect(h.errors[0]?.message).toContain('unknown type');
    await expectNewSocketAfter(h, 500);
  });

  it('4001: gets a new token before any retry', async () => {
    const h = harness();
    h.client.start();
    await vi.advanceTimersByTimeAsync(0);
    const s = h.last();
    s.open();
    s.serverClose(4001);
    expect(h.errors.map((e) => e.code)).toEqual(['auth_failed']);
    const s2 = await expectNewSocketAfter(h, 500);
    expect(h.getToken).toHaveBeenCalledTimes(2);
    s2.open();
    expect(s2.frames[0]).toMatchObject({ token: 'token-2' });
  });

  it('4001 repeatedly: gives up after five attempts, each with a fresh token', async () => {
    const h = harness({ random: () => 0 });
    h.client.start();
    for (let i = 0; i < 6; i++) {
      await vi.advanceTimersByTimeAsync(0);
      h.last().open();
      h.last().serverClose(4001);
    }
    expect(h.sockets.map((s) => s.frames[0]?.['token'])).toEqual([
      'token-1',
      'token-2',
      'token-3',
      'token-4',
      'token-5',
      'token-6',
    ]);
    expect(h.client.status).toBe('failed');
    expect(h.errors.at(-1)?.code).toBe('gave_up');
  });

  it('4002: reconnects with the same token', async () => {
    const h = harness();
    h.client.start();
    await vi.advanceTimersByTimeAsync(0);
    h.last().open();
    h.last().serverClose(4002);
    const s2 = await expectNewSocketAfter(h, 500);
    s2.open();
    expect(s2.frames[0]).toMatchObject({ token: 'token-1' });
    expect(h.errors).toEqual([]);
  });

  it('4003: gets a new token, reconnects and resumes', async () => {
    const h = harness();
    h.client.start();
    const s = await h.connect('c4');
    s.receive(eventFrame('voice.left', 'c5'));
    s.receive({ v: 1, type: 'error', code: 'token_expired', message: 'token expired' });
    s.serverClose(4003);
    const s2 = await expectNewSocketAfter(h, 500);
    s2.open();
    expect(s2.frames[0]).toEqual({ v: 1, type: 'auth', token: 'token-2', resume: { cursor: 'c5' } });
    expect(h.errors).toEqual([]);
  });

  it('4008: reconnects and resumes with the same token', async () => {
    const h = harness();
    h.client.start();
    const s = await h.connect('c8');
    s.serverClose(4008);
    const s2 = await expectNewSocketAfter(h, 500);
    s2.open();
    expect(s2.frames[0]).toEqual({ v: 1, type: 'auth', token: 'token-1', resume: { cursor: 'c8' } });
  });

  it('4029: reports and reconnects later with growing backoff', async () => {
    const h = harness({ random: () => 0.999 });
    h.client.start();
    await vi.advanceTimersByTimeAsync(0);
    h.last().open();
    h.last().serverClose(4029);
    (await expectNewSocketAfter(h, 1000)).serverClose(4029);
    await expectNewSocketAfter(h, 1998);
    expect(h.errors.map((e) => e.code)).toEqual(['rate_limited', 'rate_limited']);
  });

  it('4029: never reconnects sooner than the base delay, even when the jitter draws 0', async () => {
    const h = harness({ random: () => 0 });
    h.client.start();
    const s = await h.connect();
    s.serverClose(4029);
    await expectNewSocketAfter(h, 1000);
  });
});

describe('heartbeats', () => {
  it('treats two missed server heartbeats as a dead connection and resumes', async () => {
    const h = harness({ random: () => 0 });
    h.client.start();
    const s = await h.connect('c1');
    // Server pings keep it alive.
    for (let i = 0; i < 6; i++) {
      await vi.advanceTimersByTimeAsync(25_000);
      s.receive({ v: 1, type: 'ping' });
    }
    expect(h.sockets).toHaveLength(1);
    expect(s.closedByClient).toBeNull();
    // Silence: dead after 2 × 25 s.
    await vi.advanceTimersByTimeAsync(49_999);
    expect(s.closedByClient).toBeNull();
    await vi.advanceTimersByTimeAsync(1);
    expect(s.closedByClient).not.toBeNull();
    expect(h.client.status).toBe('reconnecting');
    await vi.advanceTimersByTimeAsync(1);
    expect(h.sockets).toHaveLength(2);
    h.last().open();
    expect(h.last().frames[0]).toMatchObject({ resume: { cursor: 'c1' } });
  });

  it('honours a configured heartbeat interval and tolerance', async () => {
    const h = harness({ heartbeatIntervalMs: 1000, missedHeartbeats: 3, pingIntervalMs: 0 });
    h.client.start();
    const s = await h.connect();
    await vi.advanceTimersByTimeAsync(2999);
    expect(s.closedByClient).toBeNull();
    await vi.advanceTimersByTimeAsync(1);
    expect(s.closedByClient).not.toBeNull();
  });

  it('sends client pings once open and counts pongs as liveness; never answers a server ping', async () => {
    const h = harness({ heartbeatIntervalMs: 10_000, pingIntervalMs: 4_000 });
    h.client.start();
    const s = await h.connect();
    s.receive({ v: 1, type: 'ping' });
    expect(s.frames.filter((f) => f['type'] === 'pong')).toEqual([]);
    for (let i = 0; i < 10; i++) {
      await vi.advanceTimersByTimeAsync(4_000);
      s.receive({ v: 1, type: 'pong' });
    }
    expect(s.frames.filter((f) => f['type'] === 'ping')).toHaveLength(10);
    expect(s.frames.every((f) => f['type'] === 'auth' || f['type'] === 'ping')).toBe(true);
    expect(s.closedByClient).toBeNull();
  });

  it('abandons a handshake that gets no ack', async () => {
    const h = harness({ handshakeTimeoutMs: 5_000 });
    h.client.start();
    await vi.advanceTimersByTimeAsync(0);
    h.last().open();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(h.last().closedByClient).not.toBeNull();
    await expectNewSocketAfter(h, 500);
  });
});

describe('robustness', () => {
  it('reports and ignores frames that are not protocol v1', async () => {
    const h = harness();
    h.client.start();
    const s = await h.connect();
    s.receive('not json');
    s.receive({ v: 2, type: 'ping' });
    s.receive({ v: 1, type: 'event', event: 'voice.left', cursor: 'x', payload: { guildId: '2000' } });
    s.receive(eventFrame('voice.left', 'c1', { extra: { nested: true } }));
    expect(h.errors.map((e) => e.code)).toEqual(['bad_frame', 'bad_frame', 'bad_frame']);
    expect(h.events).toHaveLength(1);
    expect(h.events[0]?.event['extra']).toEqual({ nested: true });
    expect(h.client.status).toBe('open');
  });

  it('reports a token failure and retries', async () => {
    let calls = 0;
    const h = harness({
      getToken: () => (++calls === 1 ? Promise.reject(new Error('offline')) : Promise.resolve('t')),
    });
    h.client.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(h.sockets).toHaveLength(0);
    expect(h.errors.map((e) => e.code)).toEqual(['token_error']);
    await vi.advanceTimersByTimeAsync(500);
    expect(h.sockets).toHaveLength(1);
  });

  it('close() stops everything and ignores the old socket', async () => {
    const h = harness();
    h.client.start();
    const s = await h.connect();
    h.client.close();
    expect(h.client.status).toBe('closed');
    expect(s.closedByClient).toEqual({ code: 1000, reason: 'client closed' });
    s.receive(eventFrame('voice.left', 'c1'));
    s.serverClose(1006);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(h.sockets).toHaveLength(1);
    expect(h.events).toEqual([]);
  });

  it('close() during a pending token fetch opens no socket', async () => {
    let resolve: (t: string) => void = () => {};
    const h = harness({ getToken: () => new Promise<string>((r) => (resolve = r)) });
    h.client.start();
    h.client.close();
    resolve('late');
    await vi.advanceTimersByTimeAsync(10_000);
    expect(h.sockets).toHaveLength(0);
  });

  it('notifies subscribers of status changes', async () => {
    const h = harness();
    const seen: ConnectionStatus[] = [];
    const unsubscribe = h.client.subscribe((s) => seen.push(s));
    h.client.start();
    const s = await h.connect();
    s.serverClose(1006);
    unsubscribe();
    await vi.advanceTimersByTimeAsync(500);
    expect(seen).toEqual(['connecting', 'open', 'reconnecting']);
  });
});

describe('token refresh before expiry', () => {
  const jwt = (exp: number, n: number): string =>
    `h.${Buffer.from(JSON.stringify({ sub: '3001', exp, n })).toString('base64url')}.s`;

  it('reads exp from a JWT', () => {
    expect(jwtExpiry(jwt(1_800_000_000, 1))).toBe(1_800_000_000_000);
    expect(jwtExpiry('opaque')).toBeNull();
    expect(jwtExpiry('a.!!!.c')).toBeNull();
  });

  it('sends a new auth frame on the open connection a minute before exp', async () => {
    vi.setSystemTime(new Date('2026-11-28T00:00:00.000Z'));
    let n = 0;
    const getToken = vi.fn(() => Promise.resolve(jwt(Math.floor(Date.now() / 1000) + 3600, ++n)));
    const h = harness({ getToken, heartbeatIntervalMs: 10 * 3600_000, pingIntervalMs: 0, scope: 'self' });
    h.client.start();
    const s = await h.connect('c1');
    await vi.advanceTimersByTimeAsync(3540_000 - 1);
    expect(s.frames).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(getToken).toHaveBeenCalledTimes(2);
    expect(s.frames).toHaveLength(2);
    const second = s.frames[1] as { token: string; resume?: unknown; scope?: string };
    expect(second.token).not.toBe((s.frames[0] as { token: string }).token);
    expect(second.resume).toBeUndefined();
    expect(second.scope).toBe('self');
    s.ack('c2');
    expect(h.client.status).toBe('open');
    expect(h.client.cursor).toBe('c2');
    expect(h.sockets).toHaveLength(1);
    // And again for the new token.
    await vi.advanceTimersByTimeAsync(3540_000);
    expect(s.frames).toHaveLength(3);
  });

  it('a failed refresh is reported and the connection stays', async () => {
    let n = 0;
    const getToken = vi.fn(() =>
      ++n === 1 ? Promise.resolve(jwt(Math.floor(Date.now() / 1000) + 120, n)) : Promise.reject(new Error('down')),
    );
    const h = harness({ getToken, pingIntervalMs: 0, heartbeatIntervalMs: 3600_000 });
    h.client.start();
    const s = await h.connect();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(h.errors.map((e) => e.code)).toEqual(['token_error']);
    expect(h.client.status).toBe('open');
    // The edge then closes with 4003: a new token is fetched for the retry.
    s.serverClose(4003);
    await vi.advanceTimersByTimeAsync(500);
    expect(getToken).toHaveBeenCalledTimes(3);
  });
});
