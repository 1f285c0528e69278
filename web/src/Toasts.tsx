import { useCallback, useEffect, useRef, useState, type ReactNode } from 'react';

export type ToastKind = 'info' | 'success' | 'warning' | 'error';

export interface Toast {
  id: number;
  kind: ToastKind;
  text: string;
  /** Optional link shown after the text. */
  href?: string;
  linkText?: string;
}

export interface ToastApi {
  toasts: Toast[];
  push: (toast: Omit<Toast, 'id'>, ttlMs?: number) => number;
  dismiss: (id: number) => void;
}

/** Toast state with auto-dismiss (errors and warnings stay longer). */
export function useToasts(): ToastApi {
  const [toasts, setToasts] = useState<Toast[]>([]);
  const nextId = useRef(1);
  const timers = useRef(new Map<number, ReturnType<typeof setTimeout>>());

  const dismiss = useCallback((id: number) => {
    const t = timers.current.get(id);
    if (t !== undefined) clearTimeout(t);
    timers.current.delete(id);
    setToasts((list) => list.filter((x) => x.id !== id));
  }, []);

  const push = useCallback(
    (toast: Omit<Toast, 'id'>, ttlMs?: number) => {
      const id = nextId.current++;
      setToasts((list) => [...list.slice(-4), { ...toast, id }]);
      const ttl = ttlMs ?? (toast.kind === 'error' || toast.kind === 'warning' ? 8000 : 4000);
      timers.current.set(
        id,
        setTimeout(() => dismiss(id), ttl),
      );
      return id;
    },
    [dismiss],
  );

  useEffect(() => {
    const map = timers.current;
    return () => {
      for (const t of map.values()) clearTimeout(t);
      map.clear();
    };
  }, []);

  return { toasts, push, dismiss };
}

const ICON: Record<ToastKind, string> = { info: 'ℹ', success: '✓', warning: '⚠', error: '✕' };

export function ToastViewport({ toasts, dismiss }: Pick<ToastApi, 'toasts' | 'dismiss'>): ReactNode {
  return (
    <div className="vw-toasts" aria-live="polite" data-testid="toasts">
      {toasts.map((t) => (
        <div
          key={t.id}
          className={`vw-toast vw-toast--${t.kind}`}
          role={t.kind === 'error' || t.kind === 'warning' ? 'alert' : 'status'}
          data-testid={`toast-${t.kind}`}
        >
          <span className="vw-toast__icon" aria-hidden="true">
            {ICON[t.kind]}
          </span>
          <span className="vw-toast__text">
            {t.text}
            {t.href !== undefined && (
              <>
                {' '}
                <a href={t.href} target="_blank" rel="noreferrer">
                  {t.linkText ?? 'Open'}
                </a>
              </>
            )}
          </span>
          <button type="button" className="vw-toast__close" aria-label="Dismiss" onClick={() => dismiss(t.id)}>
            ×
          </button>
        </div>
      ))}
    </div>
  );
}
