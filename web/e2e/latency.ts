// Leave → modal latency: from the moment the test asks the simulator to emit
// the leave (just before the POST) to the moment the modal is in the DOM
// (a MutationObserver in the page stamps it). Both clocks are this machine's
// wall clock (Date.now), so the figures include the HTTP request, the
// simulator, the worker, the bus, the edge, the WebSocket and React.
//
//   npm run latency            # 50 runs against VOICEWATCH_BIN (or VOICEWATCH_E2E_TARGET=mock)
//   LATENCY_RUNS=200 npm run latency

import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Page } from 'playwright-core';
import { DemoApi, ensureInVoice, launchBrowser, openRoom, percentile, startTarget } from './harness.ts';

declare global {
  interface Window {
    __vwModalShownAt?: number;
  }
}

const MODAL = '[data-testid="voice-dropout-modal"]';

async function armObserver(page: Page): Promise<void> {
  await page.evaluate((selector) => {
    window.__vwModalShownAt = undefined;
    const obs = new MutationObserver(() => {
      if (window.__vwModalShownAt === undefined && document.querySelector(selector) !== null) {
        window.__vwModalShownAt = Date.now();
        obs.disconnect();
      }
    });
    obs.observe(document.body, { childList: true, subtree: true });
  }, MODAL);
}

/** Runs leave → modal → rejoin-by-simulator `runs` times; returns the latencies in ms. */
export async function measureLatency(page: Page, api: DemoApi, userId: string, runs: number): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    await ensureInVoice(api, page, userId, '4000');
    await page.locator(MODAL).waitFor({ state: 'detached', timeout: 10_000 });
    await armObserver(page);
    const t0 = Date.now();
    await api.voice(userId, null);
    await page.locator(MODAL).waitFor({ state: 'visible', timeout: 10_000 });
    const shownAt = await page.evaluate(() => window.__vwModalShownAt);
    if (shownAt === undefined) throw new Error('the modal appeared but the observer did not see it');
    samples.push(shownAt - t0);
  }
  // Leave the user in voice for whoever comes next.
  await ensureInVoice(api, page, userId, '4000');
  return samples;
}

async function main(): Promise<void> {
  const runs = Number(process.env['LATENCY_RUNS'] ?? 50);
  const target = await startTarget();
  const browser = await launchBrowser();
  try {
    const api = new DemoApi(target.baseUrl);
    await ensureInVoice(api, null, '3001', '4000');
    const page = await openRoom(browser, target.baseUrl);
    await measureLatency(page, api, '3001', 2); // warm-up
    const samples = await measureLatency(page, api, '3001', runs);
    const sorted = [...samples].sort((a, b) => a - b);
    const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
    console.log(
      `leave → modal visible over ${runs} runs (${target.kind}): ` +
        `p50 ${percentile(sorted, 50)} ms, p99 ${percentile(sorted, 99)} ms, ` +
        `min ${sorted[0]} ms, max ${sorted.at(-1)} ms, mean ${mean.toFixed(1)} ms`,
    );
  } finally {
    await browser.close();
    await target.stop();
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
