import type { WebSocketConstructor, WebSocketLike } from '../src/client.ts';

/** An in-memory WebSocket: the test plays the server. */
export class MockSocket implements WebSocketLike {
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  readonly sent: string[] = [];
  closedByClient: { code: number | undefined; reason: string | undefined } | null = null;

  constructor(readonly url: string) {}

  send(data: string): void {
    this.sent.push(data);
  }

  close(code?: number, reason?: string): void {
    this.closedByClient = { code, reason };
  }

  /** Frames the client sent, parsed. */
  get frames(): Record<string, unknown>[] {
    return this.sent.map((s) => JSON.parse(s) as Record<string, unknown>);
  }

  open(): void {
    this.onopen?.({});
  }

  receive(frame: unknown): void {
    this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
  }

  ack(cursor = 'c0', recovered = true): void {
    this.receive({ v: 1, type: 'ack', event: 'auth.ok', cursor, recovered });
  }

  serverClose(code: number, reason = ''): void {
    this.onclose?.({ code, reason });
  }
}

export function mockSockets(): { WebSocket: WebSocketConstructor; sockets: MockSocket[]; last(): MockSocket } {
  const sockets: MockSocket[] = [];
  class Ctor extends MockSocket {
    constructor(url: string) {
      super(url);
      sockets.push(this);
    }
  }
  return {
    WebSocket: Ctor,
    sockets,
    last() {
      const s = sockets[sockets.length - 1];
      if (s === undefined) throw new Error('no socket created yet');
      return s;
    },
  };
}

let seq = 0;
export function eventFrame(
  type: 'voice.left' | 'voice.joined' | 'voice.moved',
  cursor: string,
  over: Record<string, unknown> = {},
): Record<string, unknown> {
  seq++;
  const payload = {
    id: `e-${seq}`,
    type,
    guildId: '2000',
    userId: '3001',
    channelId: type === 'voice.left' ? null : '4000',
    previousChannelId: type === 'voice.joined' ? null : '4000',
    occurredAt: '2026-11-28T00:00:00.123Z',
    ...over,
  };
  return { v: 1, type: 'event', event: type, cursor, payload };
}
