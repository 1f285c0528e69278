// Client of the demo-only HTTP API served by `voicewatch demo` (see web/README.md).

export interface DemoChannel {
  id: string;
  name: string;
  kind: 'open' | 'locked' | 'full' | string;
}

export interface DemoUser {
  id: string;
  name: string;
}

export interface DemoConfig {
  guildId: string;
  userId: string;
  channels: DemoChannel[];
  users: DemoUser[];
  /** Current voice channel per user id; absent or null = not in voice. */
  voice: Record<string, string | null>;
}

async function post(path: string, body?: unknown): Promise<Response> {
  const res = await fetch(path, {
    method: 'POST',
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res;
}

export async function fetchConfig(): Promise<DemoConfig> {
  const res = await fetch('/api/demo/config', { cache: 'no-store' });
  if (!res.ok) throw new Error(`/api/demo/config: HTTP ${res.status}`);
  const config = (await res.json()) as DemoConfig;
  return { ...config, voice: config.voice ?? {} };
}

/** A fresh token for the user on every call (cheap in the demo; keeps 4001/4003 recovery honest). */
export async function fetchToken(userId: string): Promise<string> {
  const res = await post('/api/demo/token', { userId });
  const body = (await res.json()) as { token?: unknown };
  if (typeof body.token !== 'string' || body.token === '') throw new Error('/api/demo/token: no token in the answer');
  return body.token;
}

export async function simVoice(guildId: string, userId: string, channelId: string | null): Promise<void> {
  await post('/api/demo/sim/voice', { guildId, userId, channelId });
}

export async function simDisconnect(): Promise<void> {
  await post('/api/demo/sim/disconnect');
}

export async function edgeStop(): Promise<void> {
  await post('/api/demo/edge/stop');
}

export async function edgeStart(): Promise<void> {
  await post('/api/demo/edge/start');
}
