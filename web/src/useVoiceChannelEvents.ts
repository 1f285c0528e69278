import { useCallback, useEffect, useRef, useState } from 'react';
import {
  VoiceEventsClient,
  type ConnectionStatus,
  type EventMeta,
  type VoiceEventsClientOptions,
  type VoiceEventsError,
} from './client.ts';
import type { Scope, VoiceEvent } from './protocol.ts';

export type VoiceEventHandler = (event: VoiceEvent, meta: EventMeta) => void;

export interface UseVoiceChannelEventsOptions {
  /** WebSocket endpoint, e.g. `/api/ws` (resolved against the page) or `wss://…/api/ws`. */
  url: string;
  /** Only events whose `userId` is this user reach the callbacks. */
  userId: string;
  /** A fixed token; changing it reconnects. Give this or `getToken`. */
  jwtToken?: string;
  /** Supplies fresh tokens (first connect, and after close 4001/4003). Its identity may change freely. */
  getToken?: () => Promise<string>;
  onVoiceLeft: VoiceEventHandler;
  onVoiceJoined?: VoiceEventHandler;
  onVoiceMoved?: VoiceEventHandler;
  onError?: (error: VoiceEventsError) => void;
  /** `self` asks the server for this token's user only; the hook filters by `userId` either way. */
  scope?: Scope;
  /** False keeps the hook disconnected. Default true. */
  enabled?: boolean;
  /** Transport seams and tuning (WebSocket, timers, random, backoff…); read when a connection starts. */
  clientOptions?: Omit<VoiceEventsClientOptions, 'url' | 'getToken' | 'scope' | 'onEvent' | 'onError' | 'onStatus'>;
}

export interface UseVoiceChannelEventsResult {
  status: ConnectionStatus;
  /** Try again now (e.g. after `failed`). */
  reconnect: () => void;
}

/**
 * Subscribes to voice events of one user. Callbacks are read through refs:
 * changing them never reconnects; changing url, userId, token, scope or
 * enabled closes the old connection and opens a new one.
 */
export function useVoiceChannelEvents(options: UseVoiceChannelEventsOptions): UseVoiceChannelEventsResult {
  const { url, userId, jwtToken, scope, enabled = true } = options;
  const latest = useRef(options);
  latest.current = options;
  const clientRef = useRef<VoiceEventsClient | null>(null);
  const [status, setStatus] = useState<ConnectionStatus>('closed');
  const hasGetter = options.getToken !== undefined;

  useEffect(() => {
    if (!enabled) {
      setStatus('closed');
      return;
    }
    const getToken = (): Promise<string> => {
      const o = latest.current;
      if (o.getToken !== undefined) return o.getToken();
      if (o.jwtToken !== undefined) return Promise.resolve(o.jwtToken);
      return Promise.reject(new Error('useVoiceChannelEvents needs jwtToken or getToken'));
    };
    const client = new VoiceEventsClient({
      ...latest.current.clientOptions,
      url,
      getToken,
      ...(scope !== undefined ? { scope } : {}),
      onEvent: (event, meta) => {
        if (event.userId !== userId) return;
        const o = latest.current;
        if (event.type === 'voice.left') o.onVoiceLeft(event, meta);
        else if (event.type === 'voice.joined') o.onVoiceJoined?.(event, meta);
        else o.onVoiceMoved?.(event, meta);
      },
      onError: (error) => latest.current.onError?.(error),
    });
    clientRef.current = client;
    const unsubscribe = client.subscribe(setStatus);
    client.start();
    setStatus(client.status);

    // Coming back online after a give-up is worth one more try.
    const onOnline = (): void => {
      if (client.status === 'failed') client.reconnect();
    };
    const win = typeof window !== 'undefined' ? window : undefined;
    win?.addEventListener('online', onOnline);
    return () => {
      win?.removeEventListener('online', onOnline);
      unsubscribe();
      client.close();
      if (clientRef.current === client) clientRef.current = null;
    };
    // A fixed token reconnects when it changes; with a getter it is ignored.
  }, [url, userId, hasGetter ? undefined : jwtToken, hasGetter, scope, enabled]);

  const reconnect = useCallback(() => clientRef.current?.reconnect(), []);
  return { status, reconnect };
}
