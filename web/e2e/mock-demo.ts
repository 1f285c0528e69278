// A small stand-in for `voicewatch demo`: the demo API of web/README.md plus
// `/api/ws` and `POST /api/voice/rejoin` per shared/protocol-v1.md. It serves
// web/dist, so the pages can be developed and UI-tested without the Rust
// binary. Not a reference implementation: it keeps everything in memory.
//
//   node --import tsx e2e/mock-demo.ts --listen 127.0.0.1:8080

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer, type WebSocket } from 'ws';
import { parseClientFrame, type VoiceEvent, type VoiceEventType } from '../src/protocol.ts';

export interface MockDemoOptions {
  host?: string;
  port?: number;
  /** Directory with the built pages. Default web/dist. */
  webDir?: string;
  /** Server heartbeat interval. Default 25000 ms. */
  pingIntervalMs?: number;
}

export interface MockDemo {
  url: string;
  server: Server;
  close(): Promise<void>;
}

const GUILD = '2000';
const CHANNELS = [
  { id: '4000', name: 'General', kind: 'open' },
  { id: '4001', name: 'Locked', kind: 'locked' },
  { id: '4002', name: 'Full', kind: 'full' },
];
const USERS = [
  { id: '3001', name: 'You' },
  { id: '3002', name: 'Ava' },
  { id: '3003', name: 'Bo' },
];

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json',
};

function b64url(buf: Buffer | string): string {
  return Buffer.from(buf).toString('base64url');
}

function signJwt(secret: Buffer, claims: Record<string, unknown>): string {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest();
  return `${head}.${body}.${b64url(sig)}`;
}

type Verified = { ok: true; sub: string; guilds: string[]; exp: number } | { ok: false; expired: boolean };

function verifyJwt(secret: Buffer, token: string): Verified {
  const parts = token.split('.');
  if (parts.length !== 3) return { ok: false, expired: false };
  const [head, body, sig] = parts as [string, string, string];
  try {
    const header = JSON.parse(Buffer.from(head, 'base64url').toString()) as { alg?: unknown };
    if (header.alg !== 'HS256') return { ok: false, expired: false };
    const want = createHmac('sha256', secret).update(`${head}.${body}`).digest();
    const got = Buffer.from(sig, 'base64url');
    if (got.length !== want.length || !timingSafeEqual(got, want)) return { ok: false, expired: false };
    const c = JSON.parse(Buffer.from(body, 'base64url').toString()) as Record<string, unknown>;
    const { sub, guilds, exp } = c;
    if (typeof sub !== 'string' || !Array.isArray(guilds) || typeof exp !== 'number') return { ok: false, expired: false };
    if (exp * 1000 <= Date.now()) return { ok: false, expired: true };
    return { ok: true, sub, guilds: guilds.filter((g): g is string => typeof g === 'string'), exp };
  } catch {
    return { ok: false, expired: false };
  }
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const b = chunk as Buffer;
    size += b.length;
    if (size > 64 * 1024) throw new Error('body too large');
    chunks.push(b);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  return text === '' ? null : (JSON.parse(text) as unknown);
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
}

interface Conn {
  ws: WebSocket;
  authed: boolean;
  sub: string;
  guilds: Set<string>;
  scope: 'guild' | 'self';
  exp: number;
}

export async function startMockDemo(opts: MockDemoOptions = {}): Promise<MockDemo> {
  const webDir = resolve(opts.webDir ?? join(fileURLToPath(new URL('.', import.meta.url)), '..', 'dist'));
  const pingMs = opts.pingIntervalMs ?? 25_000;
  const secret = randomBytes(32);
  const voice: Record<string, string | null> = { '3001': '4000', '3002': '4000', '3003': null };
  const log: { cursor: string; event: VoiceEvent }[] = [];
  let seq = 0;
  let edgeUp = true;
  const conns = new Set<Conn>();

  const send = (c: Conn, frame: unknown): void => {
    if (c.ws.readyState === c.ws.OPEN) c.ws.send(JSON.stringify(frame));
  };
  const wants = (c: Conn, e: VoiceEvent): boolean =>
    c.guilds.has(e.guildId) && (c.scope === 'guild' || e.userId === c.sub);
  const closeWith = (c: Conn, code: number, errCode: string, message: string): void => {
    send(c, { v: 1, type: 'error', code: errCode, message });
    c.ws.close(code, message);
  };

  const emit = (userId: string, channelId: string | null): void => {
    const prev = voice[userId] ?? null;
    if (prev === channelId) return;
    voice[userId] = channelId;
    const type: VoiceEventType = channelId === null ? 'voice.left' : prev === null ? 'voice.joined' : 'voice.moved';
    seq++;
    const event: VoiceEvent = {
      id: `e-${GUILD}-${userId}-mock-${seq}`,
      type,
      guildId: GUILD,
      userId,
      channelId,
      previousChannelId: prev,
      occurredAt: new Date().toISOString(),
    };
    const cursor = String(seq);
    log.push({ cursor, event });
    if (log.length > 1000) log.shift();
    for (const c of conns) if (c.authed && wants(c, event)) send(c, { v: 1, type: 'event', event: type, cursor, payload: event });
  };

  const api = async (req: IncomingMessage, res: ServerResponse, path: string): Promise<boolean> => {
    const method = req.method ?? 'GET';
    if (path === '/healthz' || path === '/readyz') {
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok\n');
      return true;
    }
    if (path === '/api/demo/config' && method === 'GET') {
      json(res, 200, { guildId: GUILD, userId: '3001', channels: CHANNELS, users: USERS, voice });
      return true;
    }
    if (path === '/api/demo/token' && method === 'POST') {
      const body = (await readBody(req)) as { userId?: unknown } | null;
      const sub = typeof body?.userId === 'string' ? body.userId : '3001';
      const now = Math.floor(Date.now() / 1000);
      json(res, 200, { token: signJwt(secret, { sub, guilds: [GUILD], iat: now, exp: now + 3600 }) });
      return true;
    }
    if (path === '/api/demo/sim/voice' && method === 'POST') {
      const body = (await readBody(req)) as { userId?: unknown; channelId?: unknown } | null;
      if (typeof body?.userId !== 'string' || !(body.channelId === null || typeof body.channelId === 'string')) {
        json(res, 400, { error: 'bad request' });
        return true;
      }
      emit(body.userId, body.channelId);
      res.writeHead(202).end();
      return true;
    }
    if (path === '/api/demo/sim/disconnect' && method === 'POST') {
      res.writeHead(202).end();
      return true;
    }
    if (path === '/api/demo/edge/stop' && method === 'POST') {
      edgeUp = false;
      for (const c of conns) c.ws.terminate();
      conns.clear();
      res.writeHead(202).end();
      return true;
    }
    if (path === '/api/demo/edge/start' && method === 'POST') {
      edgeUp = true;
      res.writeHead(202).end();
      return true;
    }
    if (path === '/api/voice/rejoin' && method === 'POST') {
      const auth = req.headers.authorization ?? '';
      const v = auth.startsWith('Bearer ') ? verifyJwt(secret, auth.slice(7)) : ({ ok: false, expired: false } as const);
      const body = (await readBody(req).catch(() => null)) as { guildId?: unknown; channelId?: unknown } | null;
      if (!v.ok || typeof body?.guildId !== 'string' || !v.guilds.includes(body.guildId)) {
        json(res, 401, { ok: false, error: 'unauthorized', message: 'Token missing, invalid or expired' });
        return true;
      }
      const { guildId, channelId } = body;
      if (channelId === '4000') {
        json(res, 200, { ok: true, guildId, channelId, url: `https://discord.com/channels/${guildId}/${channelId}` });
      } else if (channelId === '4001') {
        json(res, 403, { ok: false, error: 'missing_permissions', message: 'You do not have permission to join this channel' });
      } else if (channelId === '4002') {
        json(res, 409, { ok: false, error: 'channel_full', message: 'This voice channel is full' });
      } else {
        json(res, 404, { ok: false, error: 'channel_not_found', message: 'No such voice channel' });
      }
      return true;
    }
    return false;
  };

  const serveStatic = async (res: ServerResponse, path: string): Promise<void> => {
    const rel = normalize(path === '/' ? '/index.html' : path).replace(/^(\.\.[/\\])+/, '');
    const file = join(webDir, rel);
    if (!file.startsWith(webDir)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const s = await stat(file);
      if (!s.isFile()) throw new Error('not a file');
      res.writeHead(200, { 'Content-Type': MIME[extname(file)] ?? 'application/octet-stream' });
      res.end(await readFile(file));
    } catch {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
    }
  };

  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    api(req, res, path)
      .then((handled) => (handled ? undefined : serveStatic(res, path)))
      .catch((err: unknown) => {
        if (!res.headersSent) json(res, 400, { error: String(err) });
        else res.end();
      });
  });

  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path !== '/api/ws' || !edgeUp) {
      socket.end(`HTTP/1.1 ${edgeUp ? '404 Not Found' : '503 Service Unavailable'}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const c: Conn = { ws, authed: false, sub: '', guilds: new Set(), scope: 'guild', exp: 0 };
      conns.add(c);
      const authTimer = setTimeout(() => closeWith(c, 4002, 'auth_timeout', 'no auth frame in time'), 10_000);
      const ping = setInterval(() => {
        if (c.authed) send(c, { v: 1, type: 'ping' });
        if (c.authed && c.exp * 1000 <= Date.now()) closeWith(c, 4003, 'token_expired', 'token expired');
      }, pingMs);
      ws.on('close', () => {
        clearTimeout(authTimer);
        clearInterval(ping);
        conns.delete(c);
      });
      ws.on('message', (data, isBinary) => {
        const parsed = isBinary ? null : parseClientFrame(data.toString());
        if (parsed === null || !parsed.ok) {
          closeWith(c, 4000, 'bad_frame', parsed === null ? 'binary frame' : parsed.reason);
          return;
        }
        const f = parsed.frame;
        if (f.type === 'ping') {
          if (!c.authed) closeWith(c, 4000, 'bad_frame', 'auth must come first');
          else send(c, { v: 1, type: 'pong' });
          return;
        }
        const v = verifyJwt(secret, f.token);
        if (!v.ok) {
          if (v.expired) closeWith(c, 4003, 'token_expired', 'token expired');
          else closeWith(c, 4001, 'auth_failed', 'authentication failed');
          return;
        }
        const first = !c.authed;
        Object.assign(c, { sub: v.sub, guilds: new Set(v.guilds), scope: f.scope ?? 'guild', exp: v.exp });
        clearTimeout(authTimer);
        let recovered = false;
        if (first && f.resume !== undefined) {
          const from = Number(f.resume.cursor);
          const oldest = log[0] === undefined ? seq + 1 : Number(log[0].cursor);
          recovered = Number.isInteger(from) && from >= oldest - 1 && from <= seq;
          if (recovered) {
            for (const { cursor, event } of log) {
              if (Number(cursor) > from && wants(c, event)) send(c, { v: 1, type: 'event', event: event.type, cursor, payload: event });
            }
          }
        }
        c.authed = true;
        send(c, { v: 1, type: 'ack', event: 'auth.ok', cursor: String(seq), recovered });
      });
    });
  });

  await new Promise<void>((ok) => server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', ok));
  const addr = server.address() as AddressInfo;
  return {
    url: `http://${addr.address}:${addr.port}`,
    server,
    close: () =>
      new Promise<void>((ok) => {
        for (const c of conns) c.ws.terminate();
        wss.close();
        server.close(() => ok());
        server.closeAllConnections();
      }),
  };
}

// CLI: node --import tsx e2e/mock-demo.ts [demo] --listen HOST:PORT
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--listen');
  const listen = i >= 0 ? (process.argv[i + 1] ?? '127.0.0.1:8080') : '127.0.0.1:8080';
  const [host, port] = listen.split(':');
  const demo = await startMockDemo({ host: host ?? '127.0.0.1', port: Number(port ?? 8080) });
  console.log(`mock demo listening on ${demo.url}`);
  const stop = (): void => {
    void demo.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
