import { StrictMode, useEffect, useState, type ReactNode } from 'react';
import { createRoot } from 'react-dom/client';
import '../styles.css';
import { fetchConfig, type DemoConfig } from './api.ts';

function Landing(): ReactNode {
  const [config, setConfig] = useState<DemoConfig | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    fetchConfig().then(setConfig, (e: unknown) => setError(e instanceof Error ? e.message : String(e)));
  }, []);
  const me = config?.users.find((u) => u.id === config.userId);
  return (
    <div className="vw-landing" data-testid="landing">
      <div className="vw-landing__card">
        <div className="vw-logo" aria-hidden="true">
          <svg viewBox="0 0 24 24" width="30" height="30">
            <path d="M4 10v4M8 7v10M12 4v16M16 8v8M20 11v2" stroke="currentColor" strokeWidth="2.2" strokeLinecap="round" />
          </svg>
        </div>
        <h1>voicewatch</h1>
        <p className="vw-landing__lead">
          Know the moment a player drops out of voice — and get them back in one click.
        </p>
        <div className="vw-landing__actions">
          <a className="vw-btn vw-btn--primary" href="/room.html" data-testid="enter-room">
            Enter the game room
          </a>
          <a className="vw-btn vw-btn--ghost" href="/simulator.html">
            Open the simulator
          </a>
        </div>
        <p className="vw-landing__meta">
          {error !== null
            ? `Demo server not reachable: ${error}`
            : config === null
              ? 'Loading demo…'
              : `Guild ${config.guildId} · playing as ${me?.name ?? config.userId} · ${config.channels.length} voice channels`}
        </p>
      </div>
    </div>
  );
}

const root = document.getElementById('root');
if (root === null) throw new Error('no #root');
createRoot(root).render(
  <StrictMode>
    <Landing />
  </StrictMode>,
);
