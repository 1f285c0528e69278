import { useCallback, useRef, useState, type ReactNode } from 'react';
import type { ConnectionStatus, VoiceEventsError } from './client.ts';
import type { VoiceEvent } from './protocol.ts';
import { requestRejoin, type FetchLike } from './rejoin.ts';
import { ToastViewport, useToasts } from './Toasts.tsx';
import { useVoiceChannelEvents, type UseVoiceChannelEventsOptions } from './useVoiceChannelEvents.ts';
import { VoiceDropoutModal } from './VoiceDropoutModal.tsx';

export interface GameRoomProps {
  userId: string;
  /** Events of other guilds are ignored when set. */
  guildId?: string;
  getToken: () => Promise<string>;
  onLeaveGame: () => void;
  wsUrl?: string;
  rejoinUrl?: string;
  /** The user's voice channel when the room opens, if known. */
  initialChannelId?: string | null;
  channelName?: (channelId: string) => string | undefined;
  title?: string;
  fetchImpl?: FetchLike;
  clientOptions?: UseVoiceChannelEventsOptions['clientOptions'];
  /** Rendered beside the game area (the demo puts its simulator there). */
  aside?: ReactNode;
  children?: ReactNode;
}

interface Dropout {
  guildId: string;
  channelId: string | null;
}

const STATUS_TEXT: Record<ConnectionStatus, string> = {
  connecting: 'Connecting…',
  open: 'Live',
  reconnecting: 'Reconnecting…',
  closed: 'Offline',
  failed: 'Disconnected',
};

/** A game room that watches the player's voice connection and offers a rejoin when it drops. */
export function GameRoom({
  userId,
  guildId,
  getToken,
  onLeaveGame,
  wsUrl = '/api/ws',
  rejoinUrl = '/api/voice/rejoin',
  initialChannelId = null,
  channelName,
  title = 'Game room',
  fetchImpl,
  clientOptions,
  aside,
  children,
}: GameRoomProps): ReactNode {
  const { toasts, push, dismiss } = useToasts();
  const [channelId, setChannelId] = useState<string | null>(initialChannelId);
  const [dropout, setDropout] = useState<Dropout | null>(null);
  const [rejoining, setRejoining] = useState(false);
  const lastChannel = useRef<string | null>(initialChannelId);
  const nameOf = (id: string | null): string => (id === null ? 'voice' : (channelName?.(id) ?? `#${id}`));

  const ofThisGuild = (e: VoiceEvent): boolean => guildId === undefined || e.guildId === guildId;

  const backInVoice = (e: VoiceEvent): void => {
    if (!ofThisGuild(e)) return;
    setChannelId(e.channelId);
    lastChannel.current = e.channelId;
    setDropout((current) => {
      if (current !== null) push({ kind: 'success', text: `Back in ${nameOf(e.channelId)}` });
      return null;
    });
  };

  const { status, reconnect } = useVoiceChannelEvents({
    url: wsUrl,
    userId,
    getToken,
    ...(clientOptions !== undefined ? { clientOptions } : {}),
    onVoiceLeft: (e) => {
      if (!ofThisGuild(e)) return;
      const from = e.previousChannelId ?? lastChannel.current;
      setChannelId(null);
      setDropout({ guildId: e.guildId, channelId: from ?? null });
      push({ kind: 'warning', text: `You dropped out of ${nameOf(from ?? null)}` });
    },
    onVoiceJoined: backInVoice,
    onVoiceMoved: backInVoice,
    onError: (err: VoiceEventsError) => {
      if (err.fatal) push({ kind: 'error', text: 'Lost the live connection. Retry from the status badge.' });
      else if (err.code === 'auth_failed' || err.code === 'token_error') push({ kind: 'error', text: err.message });
      else if (err.code === 'resume_gap') push({ kind: 'info', text: 'Live updates were interrupted; some voice changes may have been missed.' });
    },
  });

  const onRejoin = useCallback(async () => {
    if (dropout === null || rejoining) return;
    if (dropout.channelId === null) {
      push({ kind: 'error', text: 'The channel you were in is unknown; rejoin from Discord.' });
      return;
    }
    setRejoining(true);
    try {
      let token: string;
      try {
        token = await getToken();
      } catch (err) {
        push({ kind: 'error', text: `Could not get a token: ${err instanceof Error ? err.message : String(err)}` });
        return;
      }
      const result = await requestRejoin(
        { token, guildId: dropout.guildId, channelId: dropout.channelId, endpoint: rejoinUrl },
        fetchImpl,
      );
      if (result.ok) {
        setDropout(null);
        push({ kind: 'success', text: `Rejoining ${nameOf(result.channelId)}.`, href: result.url, linkText: 'Open in Discord' });
      } else {
        const wait = result.retryAfterSec !== undefined ? ` Try again in ${Math.ceil(result.retryAfterSec)} s.` : '';
        push({ kind: 'error', text: `${result.message}${wait}` });
      }
    } finally {
      setRejoining(false);
    }
    // nameOf reads props only.
  }, [dropout, rejoining, getToken, rejoinUrl, fetchImpl, push]);

  return (
    <div className="vw-room" data-testid="game-room">
      <header className="vw-room__header">
        <div>
          <h1 className="vw-room__title">{title}</h1>
          <p className="vw-room__sub">
            <span className={`vw-voice ${channelId === null ? 'vw-voice--off' : 'vw-voice--on'}`} data-testid="voice-state">
              {channelId === null ? 'Not in voice' : `In voice · ${nameOf(channelId)}`}
            </span>
          </p>
        </div>
        <div className="vw-room__header-actions">
          <button
            type="button"
            className={`vw-pill vw-pill--${status}`}
            data-testid="connection-status"
            data-status={status}
            onClick={reconnect}
            disabled={status === 'open' || status === 'connecting'}
            title={status === 'failed' ? 'Reconnect' : 'Connection to voicewatch'}
          >
            <span className="vw-pill__dot" aria-hidden="true" />
            {STATUS_TEXT[status]}
          </button>
          <button type="button" className="vw-btn vw-btn--ghost" onClick={onLeaveGame}>
            Leave Game
          </button>
        </div>
      </header>
      <div className="vw-room__body">
        <main className="vw-room__main">{children}</main>
        {aside !== undefined && <aside className="vw-room__aside">{aside}</aside>}
      </div>
      <VoiceDropoutModal
        open={dropout !== null}
        onRejoin={() => void onRejoin()}
        onLeaveGame={onLeaveGame}
        isRejoinLoading={rejoining}
        detail={dropout?.channelId != null ? <>Last channel: <strong>{nameOf(dropout.channelId)}</strong></> : undefined}
      />
      <ToastViewport toasts={toasts} dismiss={dismiss} />
    </div>
  );
}
