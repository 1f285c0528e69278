// Browser tests of the demo pages against `voicewatch demo` (or the mock, see harness.ts).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { ARTIFACTS, DemoApi, ensureInVoice, launchBrowser, openRoom, percentile, startTarget, type Browser, type Target } from './harness.ts';
import { measureLatency } from './latency.ts';

const USER = '3001';
const MODAL = '[data-testid="voice-dropout-modal"]';

let target: Target;
let browser: Browser;
let api: DemoApi;

before(async () => {
  target = await startTarget();
  api = new DemoApi(target.baseUrl);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await target?.stop();
});

async function roomInVoice(channelId = '4000'): Promise<Page> {
  // Join before opening so the room starts from the simulator's state.
  await ensureInVoice(api, null, USER, channelId);
  const page = await openRoom(browser, target.baseUrl);
  await ensureInVoice(api, page, USER, channelId);
  return page;
}

async function dropOut(page: Page): Promise<void> {
  await api.voice(USER, null);
  await page.locator(MODAL).waitFor({ state: 'visible', timeout: 10_000 });
}

describe('voice dropout modal', () => {
  it('shows the modal when the user leaves voice, focused on Rejoin', async () => {
    const page = await roomInVoice();
    await dropOut(page);
    const dialog = page.getByRole('dialog', { name: 'Voice connection lost' });
    await dialog.waitFor();
    assert.equal(await dialog.getAttribute('aria-modal'), 'true');
    assert.match((await dialog.textContent()) ?? '', /You dropped out of the voice channel/);
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Rejoin');
    await page.locator('[data-testid="toast-warning"]').first().waitFor();
    await page.screenshot({ path: join(ARTIFACTS, 'modal-dropout.png'), animations: 'disabled' });
    await page.close();
  });

  it('Rejoin succeeds for an open channel (4000) and closes the modal', async () => {
    const page = await roomInVoice('4000');
    await dropOut(page);
    await page.getByRole('button', { name: 'Rejoin' }).click();
    await page.locator(MODAL).waitFor({ state: 'hidden', timeout: 10_000 });
    await page.locator('[data-testid="toast-success"]').first().waitFor();
    await page.close();
  });

  it('Rejoin fails for a locked channel (4001): error toast, modal stays, retry allowed', async () => {
    const page = await roomInVoice('4001');
    await dropOut(page);
    const rejoin = page.getByRole('button', { name: 'Rejoin' });
    await rejoin.click();
    const toast = page.locator('[data-testid="toast-error"]').first();
    await toast.waitFor({ timeout: 10_000 });
    assert.ok(((await toast.textContent()) ?? '').trim().length > 1, 'the error toast shows the server message');
    assert.ok(await page.locator(MODAL).isVisible(), 'the modal stays open');
    await page.screenshot({ path: join(ARTIFACTS, 'modal-rejoin-failed.png'), animations: 'disabled' });
    // Retry: the button is usable again and fails the same way.
    await rejoin.click();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="toast-error"]').length >= 2, null, { timeout: 10_000 });
    assert.ok(await page.locator(MODAL).isVisible());
    await page.close();
  });

  it('a later voice.joined for the user closes the modal', async () => {
    const page = await roomInVoice();
    await dropOut(page);
    await api.voice(USER, '4000');
    await page.locator(MODAL).waitFor({ state: 'hidden', timeout: 10_000 });
    await page.close();
  });

  it('events of other users do not open the modal', async () => {
    const page = await roomInVoice();
    await ensureInVoice(api, null, '3002', '4000');
    await api.voice('3002', null);
    // A leave of the user afterwards proves the earlier event was delivered and ignored.
    await dropOut(page);
    assert.equal(await page.locator('[data-testid="toast-warning"]').count(), 1);
    await api.voice('3002', '4000');
    await page.close();
  });

  it('the simulator panel beside the room drives the leave', async () => {
    const page = await roomInVoice();
    const leave = page.locator(`[data-testid="sim-leave-${USER}"]`);
    await page.waitForFunction((sel) => {
      const b = document.querySelector(sel);
      return b instanceof HTMLButtonElement && !b.disabled;
    }, `[data-testid="sim-leave-${USER}"]`, { timeout: 10_000 });
    await leave.click();
    await page.locator(MODAL).waitFor({ state: 'visible', timeout: 10_000 });
    await page.close();
  });

  it('the landing and simulator pages load from the demo server', async () => {
    const page = await browser.context.newPage();
    await page.goto(`${target.baseUrl}/`);
    await page.locator('[data-testid="landing"]').waitFor();
    await page.getByText(/Guild 2000/).waitFor({ timeout: 10_000 });
    await page.goto(`${target.baseUrl}/simulator.html`);
    for (const id of ['3001', '3002', '3003']) await page.locator(`[data-testid="sim-user-${id}"]`).waitFor({ timeout: 10_000 });
    await page.close();
  });

  it('Leave Game goes to the landing page', async () => {
    const page = await roomInVoice();
    await dropOut(page);
    await page.locator(MODAL).getByRole('button', { name: 'Leave Game' }).click();
    await page.locator('[data-testid="landing"]').waitFor({ timeout: 10_000 });
    assert.equal(new URL(page.url()).pathname, '/');
    await page.close();
  });

  it('reconnects after the edge stops and starts, and shows a leave sent meanwhile', async () => {
    const page = await roomInVoice();
    const status = page.locator('[data-testid="connection-status"]');
    try {
      const stopped = await api.edgeStop();
      assert.ok(stopped === 202 || stopped === 'reset', `edge/stop answered ${stopped}`);
      await page.locator('[data-testid="connection-status"]:not([data-status="open"])').waitFor({ timeout: 60_000 });
      await api.voice(USER, null);
      // Give the client a failed attempt or two against the stopped edge.
      await page.waitForTimeout(1500);
      assert.equal(await page.locator(MODAL).count(), 0, 'no modal while the edge is down');
    } finally {
      // Never leave the edge down for the next tests.
      assert.equal(await api.post('/api/demo/edge/start'), 202);
    }
    await page.locator('[data-testid="connection-status"][data-status="open"]').waitFor({ timeout: 40_000 });
    await page.locator(MODAL).waitFor({ state: 'visible', timeout: 10_000 });
    assert.equal(await status.getAttribute('data-status'), 'open');
    await page.screenshot({ path: join(ARTIFACTS, 'modal-after-edge-restart.png'), animations: 'disabled' });
    await page.close();
  });

  it('keeps working when the worker loses its gateway connection', async () => {
    const page = await roomInVoice();
    assert.equal(await api.post('/api/demo/sim/disconnect'), 202);
    await dropOut(page);
    await page.close();
  });

  it('latency smoke: leave → modal visible', async () => {
    const page = await roomInVoice();
    const runs = Number(process.env['LATENCY_SMOKE_RUNS'] ?? 5);
    const samples = await measureLatency(page, api, USER, runs);
    const sorted = [...samples].sort((a, b) => a - b);
    console.log(`latency smoke (${runs} runs): p50 ${percentile(sorted, 50)} ms, max ${sorted.at(-1)} ms`);
    assert.equal(samples.length, runs);
    await page.close();
  });
});
