// VoiceEventsClient over real WebSockets against the mock demo server
// (e2e/mock-demo.ts): auth, live events, edge stop/start with resume and
// replay, token refresh after 4001. Real timers, short backoff.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { startMockDemo, type MockDemo } from '../e2e/mock-demo.ts';
import { VoiceEventsClient, type ConnectionStatus, type EventMeta, type VoiceEventsError, type WebSocketConstructor } from '../src/client.ts';
import type { VoiceEvent } from '../src/protocol.ts';

let demo: MockDemo;

beforeAll(async () => {
  demo = await startMockDemo({ webDir: '/nonexistent' });
});
afterAll(async () => {
  await demo.close();
});

async function post(path: string, body?: unknown): Promise<Response> {
  return fetch(`${demo.url}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
}

async function token(userId = '3001'): Promise<string> {
  const res = await post('/api/demo/token', { userId });
  return ((await res.json()) as { token: string }).token;
}

function until(pred: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  return new Promise((ok, fail) => {
    const started = Date.now();
    const tick = (): void => {
      if (pred()) ok();
      else if (Date.now() - started > timeoutMs) fail(new Error(`timed out waiting for ${what}`));
      else setTimeout(tick, 10);
    };
    tick();
  });
}

function makeClient(getToken: () => Promise<string>) {
  const events: { event: VoiceEvent; meta: EventMeta }[] = [];
  const errors: VoiceEventsError[] = [];
  const statuses: ConnectionStatus[] = [];
  const client = new VoiceEventsClient({
    url: `${demo.url.replace('http', 'ws')}/api/ws`,
    getToken,
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    backoff: { baseMs: 50, maxMs: 400 },
    onEvent: (event, meta) => events.push({ event, meta }),
    onError: (e) => errors.push(e),
    onStatus: (s) => statuses.push(s),
  });
  return { client, events, errors, statuses };
}

describe('VoiceEventsClient against the mock demo server', () => {
  it('authenticates, receives live events, and resumes across an edge stop without duplicates', async () => {
    const c = makeClient(() => token());
    c.client.start();
    await until(() => c.client.status === 'open', 'open');
    await post('/api/demo/sim/voice', { guildId: '2000', userId: '3003', channelId: '4000' });
    await until(() => c.events.length === 1, 'a live event');
    expect(c.events[0]?.event).toMatchObject({ type: 'voice.joined', userId: '3003', channelId: '4000' });
    expect(c.events[0]?.meta.replayed).toBe(false);

    expect((await post('/api/demo/edge/stop')).status).toBe(202);
    await until(() => c.client.status === 'reconnecting', 'reconnecting');
    await post('/api/demo/sim/voice', { guildId: '2000', userId: '3003', channelId: '4001' });
    await post('/api/demo/sim/voice', { guildId: '2000', userId: '3003', channelId: null });
    await new Promise((r) => setTimeout(r, 150));
    expect((await post('/api/demo/edge/start')).status).toBe(202);
    await until(() => c.client.status === 'open' && c.events.length === 3, 'open with the replayed events');
    expect(c.events.slice(1).map((e) => [e.event.type, e.meta.replayed])).toEqual([
      ['voice.moved', true],
      ['voice.left', true],
    ]);
    expect(new Set(c.events.map((e) => e.event.id)).size).toBe(3);
    expect(c.errors).toEqual([]);
    c.client.close();
    expect(c.client.status).toBe('closed');
  });

  it('after 4001 it gets a new token and connects', async () => {
    let calls = 0;
    const c = makeClient(() => (++calls === 1 ? Promise.resolve('not-a-jwt') : token()));
    c.client.start();
    await until(() => c.client.status === 'open', 'open');
    expect(calls).toBe(2);
    expect(c.errors.map((e) => [e.code, e.details.closeCode, e.details.serverCode])).toEqual([
      ['auth_failed', 4001, 'auth_failed'],
    ]);
    c.client.close();
  });

  it('gives up after five failed attempts when the edge stays down', async () => {
    expect((await post('/api/demo/edge/stop')).status).toBe(202);
    try {
      const c = makeClient(() => token());
      c.client.start();
      await until(() => c.client.status === 'failed', 'failed', 8000);
      expect(c.errors.at(-1)?.code).toBe('gave_up');
      expect(c.statuses.at(-1)).toBe('failed');
    } finally {
      await post('/api/demo/edge/start');
    }
  });
});
