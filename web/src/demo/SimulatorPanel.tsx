import { useCallback, useEffect, useState, type ReactNode } from 'react';
import { edgeStart, edgeStop, fetchConfig, simDisconnect, simVoice, type DemoConfig } from './api.ts';

interface LogLine {
  id: number;
  at: string;
  text: string;
  ok: boolean;
}

let logId = 0;

/** Drives the Discord simulator and the edge of `voicewatch demo`. */
export function SimulatorPanel({ initial, compact = false }: { initial?: DemoConfig; compact?: boolean }): ReactNode {
  const [config, setConfig] = useState<DemoConfig | null>(initial ?? null);
  const [picked, setPicked] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState<string | null>(null);
  const [log, setLog] = useState<LogLine[]>([]);

  const refresh = useCallback(async () => {
    try {
      setConfig(await fetchConfig());
    } catch {
      // The next poll tries again.
    }
  }, []);

  useEffect(() => {
    void refresh();
    const t = setInterval(() => void refresh(), 1500);
    return () => clearInterval(t);
  }, [refresh]);

  const run = async (key: string, text: string, action: () => Promise<void>): Promise<void> => {
    setBusy(key);
    let ok = true;
    try {
      await action();
    } catch (err) {
      ok = false;
      text = `${text} failed: ${err instanceof Error ? err.message : String(err)}`;
    } finally {
      setBusy(null);
    }
    const at = new Date().toLocaleTimeString();
    setLog((l) => [{ id: ++logId, at, text, ok }, ...l].slice(0, 8));
    await refresh();
  };

  if (config === null) return <section className="vw-sim">Loading simulator…</section>;
  const channelName = (id: string | null | undefined): string =>
    id == null ? 'not in voice' : (config.channels.find((c) => c.id === id)?.name ?? `#${id}`);

  return (
    <section className={`vw-sim${compact ? ' vw-sim--compact' : ''}`} aria-label="Discord simulator" data-testid="simulator">
      <h2 className="vw-sim__title">Simulator</h2>
      <p className="vw-sim__hint">Plays Discord for the demo guild. Changes reach the room in real time.</p>
      <ul className="vw-sim__users">
        {config.users.map((u) => {
          const current = config.voice[u.id] ?? null;
          const target = picked[u.id] ?? config.channels.find((c) => c.id !== current)?.id ?? config.channels[0]?.id ?? '';
          return (
            <li key={u.id} className="vw-sim__user" data-testid={`sim-user-${u.id}`}>
              <div className="vw-sim__who">
                <span className="vw-avatar" aria-hidden="true">
                  {u.name.slice(0, 1)}
                </span>
                <span>
                  <strong>{u.name}</strong>
                  {u.id === config.userId && <span className="vw-tag">you</span>}
                  <br />
                  <small className={current === null ? 'vw-muted' : 'vw-ok'}>{channelName(current)}</small>
                </span>
              </div>
              <div className="vw-sim__controls">
                <select
                  aria-label={`Channel for ${u.name}`}
                  value={target}
                  onChange={(e) => setPicked((p) => ({ ...p, [u.id]: e.target.value }))}
                >
                  {config.channels.map((c) => (
                    <option key={c.id} value={c.id}>
                      {c.name} ({c.kind})
                    </option>
                  ))}
                </select>
                <button
                  type="button"
                  className="vw-btn vw-btn--small"
                  disabled={busy !== null || target === current}
                  onClick={() =>
                    void run(`join-${u.id}`, `${u.name} → ${channelName(target)}`, () => simVoice(config.guildId, u.id, target))
                  }
                >
                  {current === null ? 'Join' : 'Move'}
                </button>
                <button
                  type="button"
                  className="vw-btn vw-btn--small vw-btn--danger"
                  disabled={busy !== null || current === null}
                  data-testid={`sim-leave-${u.id}`}
                  onClick={() => void run(`leave-${u.id}`, `${u.name} left voice`, () => simVoice(config.guildId, u.id, null))}
                >
                  Leave
                </button>
              </div>
            </li>
          );
        })}
      </ul>
      <div className="vw-sim__infra">
        <button
          type="button"
          className="vw-btn vw-btn--small"
          disabled={busy !== null}
          onClick={() => void run('gw', 'Gateway connection cut (worker resumes)', simDisconnect)}
        >
          Cut gateway
        </button>
        <button
          type="button"
          className="vw-btn vw-btn--small vw-btn--danger"
          disabled={busy !== null}
          onClick={() =>
            void run('stop', 'Edge stopped', async () => {
              try {
                await edgeStop();
              } catch (err) {
                // A stopping edge may cut this very request's connection.
                if (!(err instanceof TypeError)) throw err;
              }
            })
          }
        >
          Stop edge
        </button>
        <button
          type="button"
          className="vw-btn vw-btn--small"
          disabled={busy !== null}
          onClick={() => void run('start', 'Edge started', edgeStart)}
        >
          Start edge
        </button>
      </div>
      {log.length > 0 && (
        <ol className="vw-sim__log" aria-label="Simulator log">
          {log.map((l) => (
            <li key={l.id} className={l.ok ? '' : 'vw-err'}>
              <time>{l.at}</time> {l.text}
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
