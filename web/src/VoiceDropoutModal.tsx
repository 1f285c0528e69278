import { useEffect, useId, useRef, type KeyboardEvent, type ReactNode } from 'react';
import { createPortal } from 'react-dom';

export interface VoiceDropoutModalProps {
  open: boolean;
  onRejoin: () => void;
  onLeaveGame: () => void;
  isRejoinLoading?: boolean;
  /** Escape calls this when given; without it the dialog stays until Rejoin or Leave Game. */
  onDismiss?: () => void;
  /** Shown under the message, e.g. the channel the user dropped from. */
  detail?: ReactNode;
  title?: string;
  message?: string;
}

const FOCUSABLE =
  'a[href], button, input, select, textarea, [tabindex]:not([tabindex="-1"])';

function focusables(root: HTMLElement): HTMLElement[] {
  return Array.from(root.querySelectorAll<HTMLElement>(FOCUSABLE)).filter(
    (el) => !el.hasAttribute('disabled') && el.getAttribute('aria-hidden') !== 'true',
  );
}

/** The dropout warning: an accessible modal dialog with Rejoin and Leave Game. */
export function VoiceDropoutModal({
  open,
  onRejoin,
  onLeaveGame,
  isRejoinLoading = false,
  onDismiss,
  detail,
  title = 'Voice connection lost',
  message = 'You dropped out of the voice channel',
}: VoiceDropoutModalProps): ReactNode {
  const titleId = useId();
  const descId = useId();
  const dialogRef = useRef<HTMLDivElement>(null);
  const rejoinRef = useRef<HTMLButtonElement>(null);

  // Focus the primary action on open; give focus back to where it was on close.
  useEffect(() => {
    if (!open) return;
    const previous = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    rejoinRef.current?.focus();
    return () => {
      if (previous !== null && previous.isConnected) previous.focus();
    };
  }, [open]);

  if (!open) return null;

  const onKeyDown = (e: KeyboardEvent<HTMLDivElement>): void => {
    if (e.key === 'Escape') {
      e.stopPropagation();
      if (onDismiss !== undefined) {
        e.preventDefault();
        onDismiss();
      }
      return;
    }
    if (e.key !== 'Tab' || dialogRef.current === null) return;
    const items = focusables(dialogRef.current);
    const first = items[0];
    const last = items[items.length - 1];
    if (first === undefined || last === undefined) {
      e.preventDefault();
      return;
    }
    const active = document.activeElement;
    const inside = active instanceof Node && dialogRef.current.contains(active);
    if (e.shiftKey && (active === first || !inside)) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && (active === last || !inside)) {
      e.preventDefault();
      first.focus();
    }
  };

  return createPortal(
    <div className="vw-backdrop" data-testid="voice-dropout-backdrop">
      <div
        ref={dialogRef}
        className="vw-modal"
        role="dialog"
        aria-modal="true"
        aria-labelledby={titleId}
        aria-describedby={descId}
        data-testid="voice-dropout-modal"
        onKeyDown={onKeyDown}
      >
        <div className="vw-modal__icon" aria-hidden="true">
          <svg viewBox="0 0 24 24" width="28" height="28" focusable="false">
            <path
              d="M12 3 1.5 21h21L12 3Z"
              fill="currentColor"
              opacity="0.18"
            />
            <path
              d="M12 3 1.5 21h21L12 3Z"
              fill="none"
              stroke="currentColor"
              strokeWidth="1.8"
              strokeLinejoin="round"
            />
            <path d="M12 10v5" stroke="currentColor" strokeWidth="2" strokeLinecap="round" />
            <circle cx="12" cy="18" r="1.2" fill="currentColor" />
          </svg>
        </div>
        <h2 id={titleId} className="vw-modal__title">
          {title}
        </h2>
        <div id={descId} className="vw-modal__body">
          <p className="vw-modal__message">{message}</p>
          {detail !== undefined && <p className="vw-modal__detail">{detail}</p>}
        </div>
        <div className="vw-modal__actions">
          <button type="button" className="vw-btn vw-btn--ghost" onClick={onLeaveGame}>
            Leave Game
          </button>
          <button
            ref={rejoinRef}
            type="button"
            className="vw-btn vw-btn--primary"
            aria-disabled={isRejoinLoading}
            aria-busy={isRejoinLoading}
            onClick={() => {
              // aria-disabled keeps the button focusable while loading.
              if (!isRejoinLoading) onRejoin();
            }}
          >
            {isRejoinLoading && <span className="vw-spinner" aria-hidden="true" />}
            {isRejoinLoading ? 'Rejoining…' : 'Rejoin'}
          </button>
        </div>
      </div>
    </div>,
    document.body,
  );
}
