// Client for the rejoin check of protocol v1, section 6.

export type RejoinErrorCode =
  | 'unauthorized'
  | 'not_in_guild'
  | 'channel_not_found'
  | 'missing_permissions'
  | 'channel_full'
  | 'discord_error'
  | 'rate_limited'
  /** Not from the server: the request failed or the answer was not understood. */
  | 'network_error';

export type RejoinResult =
  | { ok: true; guildId: string; channelId: string; url: string }
  | { ok: false; error: RejoinErrorCode | string; message: string; status: number; retryAfterSec?: number };

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** `POST {endpoint}` with `Authorization: Bearer` and `{"guildId","channelId"}`. Never throws. */
export async function requestRejoin(
  args: { token: string; guildId: string; channelId: string; endpoint?: string; signal?: AbortSignal },
  fetchImpl: FetchLike = (input, init) => globalThis.fetch(input, init),
): Promise<RejoinResult> {
  let res: Response;
  try {
    res = await fetchImpl(args.endpoint ?? '/api/voice/rejoin', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${args.token}` },
      body: JSON.stringify({ guildId: args.guildId, channelId: args.channelId }),
      ...(args.signal !== undefined ? { signal: args.signal } : {}),
    });
  } catch (err) {
    return { ok: false, error: 'network_error', message: `Could not reach the server (${err instanceof Error ? err.message : String(err)})`, status: 0 };
  }
  let body: unknown = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (res.ok && isRecord(body) && body['ok'] === true) {
    return {
      ok: true,
      guildId: typeof body['guildId'] === 'string' ? body['guildId'] : args.guildId,
      channelId: typeof body['channelId'] === 'string' ? body['channelId'] : args.channelId,
      url: typeof body['url'] === 'string' ? body['url'] : `https://discord.com/channels/${args.guildId}/${args.channelId}`,
    };
  }
  const retryAfter = Number(res.headers.get('Retry-After'));
  const error = isRecord(body) && typeof body['error'] === 'string' ? body['error'] : 'network_error';
  const message =
    isRecord(body) && typeof body['message'] === 'string' && body['message'] !== ''
      ? body['message']
      : `Rejoin failed (HTTP ${res.status})`;
  return {
    ok: false,
    error,
    message,
    status: res.status,
    ...(Number.isFinite(retryAfter) && retryAfter > 0 ? { retryAfterSec: retryAfter } : {}),
  };
}
