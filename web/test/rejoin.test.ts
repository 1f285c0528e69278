import { describe, expect, it } from 'vitest';
import { requestRejoin } from '../src/rejoin.ts';

const args = { token: 'jwt', guildId: '2000', channelId: '4000' };

describe('requestRejoin', () => {
  it('returns the ok answer of section 6', async () => {
    const r = await requestRejoin(args, () =>
      Promise.resolve(Response.json({ ok: true, guildId: '2000', channelId: '4000', url: 'https://discord.com/channels/2000/4000' })),
    );
    expect(r).toEqual({ ok: true, guildId: '2000', channelId: '4000', url: 'https://discord.com/channels/2000/4000' });
  });

  it('passes on the error code, message, status and Retry-After', async () => {
    const r = await requestRejoin(args, () =>
      Promise.resolve(
        Response.json({ ok: false, error: 'rate_limited', message: 'Slow down' }, { status: 429, headers: { 'Retry-After': '7' } }),
      ),
    );
    expect(r).toEqual({ ok: false, error: 'rate_limited', message: 'Slow down', status: 429, retryAfterSec: 7 });
  });

  it('never throws: network failures and non-JSON answers become errors', async () => {
    const down = await requestRejoin(args, () => Promise.reject(new TypeError('fetch failed')));
    expect(down).toMatchObject({ ok: false, error: 'network_error', status: 0 });
    expect(down.ok ? '' : down.message).toContain('fetch failed');
    const html = await requestRejoin(args, () => Promise.resolve(new Response('<h1>bad gateway</h1>', { status: 502 })));
    expect(html).toMatchObject({ ok: false, status: 502, message: 'Rejoin failed (HTTP 502)' });
  });
});
