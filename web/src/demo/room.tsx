import { StrictMode, useCallback, useEffect, useState, type ReactNode } from 'react';
import { createRoot } from 'react-dom/client';
import { GameRoom } from '../GameRoom.tsx';
import '../styles.css';
import { fetchConfig, fetchToken, type DemoConfig } from './api.ts';
import { SimulatorPanel } from './SimulatorPanel.tsx';

function Room(): ReactNode {
  const [config, setConfig] = useState<DemoConfig | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    fetchConfig().then(setConfig, (e: unknown) => setError(e instanceof Error ? e.message : String(e)));
  }, []);
  const userId = config?.userId ?? '';
  const getToken = useCallback(() => fetchToken(userId), [userId]);

  if (error !== null) return <p className="vw-page vw-err">Demo server not reachable: {error}</p>;
  if (config === null) return <p className="vw-page">Loading…</p>;
  const players = config.users;
  return (
    <GameRoom
      userId={config.userId}
      guildId={config.guildId}
      getToken={getToken}
      onLeaveGame={() => window.location.assign('/')}
      initialChannelId={config.voice[config.userId] ?? null}
      channelName={(id) => config.channels.find((c) => c.id === id)?.name}
      title="Midnight Heist · Round 3"
      aside={<SimulatorPanel initial={config} compact />}
    >
      <div className="vw-board">
        <div className="vw-board__scene" aria-hidden="true">
          <svg viewBox="0 0 64 64" width="84" height="84" fill="none" stroke="currentColor" strokeWidth="2.5" strokeLinejoin="round">
            <rect x="10" y="16" width="44" height="34" rx="4" />
            <circle cx="32" cy="33" r="9" />
            <path d="M32 24v4M32 38v4M23 33h4M37 33h4" strokeLinecap="round" />
            <path d="M16 50v4M48 50v4" strokeLinecap="round" />
          </svg>
        </div>
        <h2>Plan the vault run</h2>
        <p className="vw-muted">Coordinate with your crew in voice. If you drop out, you will be asked to rejoin.</p>
        <ul className="vw-players">
          {players.map((p) => (
            <li key={p.id}>
              <span className="vw-avatar" aria-hidden="true">
                {p.name.slice(0, 1)}
              </span>
              {p.name}
              {p.id === config.userId && <span className="vw-tag">you</span>}
            </li>
          ))}
        </ul>
      </div>
    </GameRoom>
  );
}

const root = document.getElementById('root');
if (root === null) throw new Error('no #root');
createRoot(root).render(
  <StrictMode>
    <Room />
  </StrictMode>,
);
