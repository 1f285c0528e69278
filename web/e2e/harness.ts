// Starts the demo server and a headless Debian chromium for the browser tests.
//
// Target: the real `voicewatch demo` binary (env VOICEWATCH_BIN, default
// ../target/debug/voicewatch), or the in-process mock when
// VOICEWATCH_E2E_TARGET=mock (fast UI iteration only).

import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startMockDemo } from './mock-demo.ts';

export const WEB_DIR = resolve(fileURLToPath(new URL('.', import.meta.url)), '..');
export const REPO_ROOT = resolve(WEB_DIR, '..');
export const DIST_DIR = join(WEB_DIR, 'dist');
export const ARTIFACTS = join(REPO_ROOT, 'test-artifacts');

export interface Target {
  baseUrl: string;
  kind: 'binary' | 'mock';
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => ok(port));
    });
  });
}

async function waitReady(baseUrl: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`voicewatch demo exited early (code ${child.exitCode}, signal ${child.signalCode})`);
    }
    try {
      const res = await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`voicewatch demo not ready within ${timeoutMs} ms (${last})`);
}

export async function startTarget(): Promise<Target> {
  mkdirSync(ARTIFACTS, { recursive: true });
  if (!existsSync(join(DIST_DIR, 'room.html'))) throw new Error(`${DIST_DIR} is not built: run npm run build first`);
  if (process.env['VOICEWATCH_E2E_TARGET'] === 'mock') {
    const demo = await startMockDemo({ webDir: DIST_DIR });
    return { baseUrl: demo.url, kind: 'mock', stop: demo.close };
  }
  const bin = resolve(WEB_DIR, process.env['VOICEWATCH_BIN'] ?? '../target/debug/voicewatch');
  if (!existsSync(bin)) {
    throw new Error(`voicewatch binary not found at ${bin} (set VOICEWATCH_BIN, or VOICEWATCH_E2E_TARGET=mock for the mock server)`);
  }
  const port = await freePort();
  // Any other listener the demo may open (worker health/metrics) gets a free port too.
  const workerPort = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const logPath = join(ARTIFACTS, `voicewatch-demo-${port}.log`);
  const logFile = createWriteStream(logPath);
  const child = spawn(bin, ['demo', '--listen', `127.0.0.1:${port}`], {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      VOICEWATCH_WEB_DIR: DIST_DIR,
      VOICEWATCH_EDGE_LISTEN: `127.0.0.1:${port}`,
      VOICEWATCH_WORKER_LISTEN: `127.0.0.1:${workerPort}`,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.pipe(logFile);
  child.stderr?.pipe(logFile);
  // Never leave the demo running behind a crashed or interrupted test run.
  const killOnExit = (): void => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  };
  process.once('exit', killOnExit);
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
    process.kill(child.pid, 'SIGTERM');
    const timer = setTimeout(() => {
      if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
    }, 5000);
    await exited;
    clearTimeout(timer);
    process.removeListener('exit', killOnExit);
  };
  try {
    await waitReady(baseUrl, child, 30_000);
  } catch (err) {
    await stop();
    throw new Error(`${err instanceof Error ? err.message : String(err)}; log: ${logPath}`);
  }
  return { baseUrl, kind: 'binary', stop };
}

export const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';

export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

/** Debian chromium with a fresh profile directory; nothing is downloaded. */
export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} missing: apt-get install -y chromium`);
  const profile = await mkdtemp(join(tmpdir(), 'vw-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** The demo API, called by the tests the way the simulator panel does. */
export class DemoApi {
  constructor(readonly baseUrl: string) {}

  async post(path: string, body?: unknown): Promise<number> {
    const res = await fetch(`${this.baseUrl}${path}`, {
      method: 'POST',
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(10_000),
    });
    await res.arrayBuffer();
    return res.status;
  }

  /**
   * `POST /api/demo/edge/stop`. A stopping edge may cut every connection it
   * accepted, the one carrying this request included, before the 202 is
   * written: a reset connection counts as "stopped" and the caller checks
   * the effect (the page leaves `open`).
   */
  async edgeStop(): Promise<number | 'reset'> {
    try {
      return await this.post('/api/demo/edge/stop');
    } catch (err) {
      if (err instanceof TypeError) return 'reset';
      throw err;
    }
  }

  async config(): Promise<{ guildId: string; userId: string; voice: Record<string, string | null> }> {
    const res = await fetch(`${this.baseUrl}/api/demo/config`, { signal: AbortSignal.timeout(10_000) });
    if (!res.ok) throw new Error(`/api/demo/config: HTTP ${res.status}`);
    return (await res.json()) as { guildId: string; userId: string; voice: Record<string, string | null> };
  }

  async voice(userId: string, channelId: string | null, guildId = '2000'): Promise<void> {
    const status = await this.post('/api/demo/sim/voice', { guildId, userId, channelId });
    if (status !== 202) throw new Error(`/api/demo/sim/voice: HTTP ${status}`);
  }
}

/** Opens the game room and waits until its WebSocket is authenticated. */
export async function openRoom(browser: Browser, baseUrl: string): Promise<Page> {
  const page = await browser.context.newPage();
  await page.goto(`${baseUrl}/room.html`);
  await page.locator('[data-testid="connection-status"][data-status="open"]').waitFor({ timeout: 15_000 });
  return page;
}

/** Puts the user in `channelId` (through the simulator) and waits until the room shows it. */
export async function ensureInVoice(api: DemoApi, page: Page | null, userId: string, channelId: string): Promise<void> {
  const cfg = await api.config();
  if ((cfg.voice[userId] ?? null) !== channelId) await api.voice(userId, channelId);
  if (page !== null) {
    await page.locator('[data-testid="voice-state"].vw-voice--on').waitFor({ timeout: 10_000 });
  }
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? Number.NaN;
}
