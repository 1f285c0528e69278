// @vitest-environment happy-dom
import { act, cleanup, fireEvent, render, renderHook, screen } from '@testing-library/react';
import { useState, type ReactNode } from 'react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { GameRoom } from '../src/GameRoom.tsx';
import { useVoiceChannelEvents, type UseVoiceChannelEventsOptions } from '../src/useVoiceChannelEvents.ts';
import { VoiceDropoutModal } from '../src/VoiceDropoutModal.tsx';
import { eventFrame, mockSockets } from './mock-socket.ts';

afterEach(() => {
  cleanup();
});

async function flush(): Promise<void> {
  await act(async () => {
    await Promise.resolve();
    await Promise.resolve();
  });
}

describe('useVoiceChannelEvents', () => {
  it('filters to the user, uses the latest callbacks without reconnecting, exposes status', async () => {
    const ws = mockSockets();
    const left1 = vi.fn();
    const left2 = vi.fn();
    const joined = vi.fn();
    const base: UseVoiceChannelEventsOptions = {
      url: 'ws://t/api/ws',
      userId: '3001',
      jwtToken: 'jwt-a',
      onVoiceLeft: left1,
      onVoiceJoined: joined,
      clientOptions: { WebSocket: ws.WebSocket },
    };
    const { result, rerender } = renderHook((props: UseVoiceChannelEventsOptions) => useVoiceChannelEvents(props), {
      initialProps: base,
    });
    expect(result.current.status).toBe('connecting');
    await flush();
    const s = ws.last();
    act(() => {
      s.open();
      s.ack('c1');
    });
    expect(s.frames[0]).toEqual({ v: 1, type: 'auth', token: 'jwt-a' });
    expect(result.current.status).toBe('open');

    act(() => {
      s.receive(eventFrame('voice.left', 'c2', { userId: '3002' }));
      s.receive(eventFrame('voice.left', 'c3'));
    });
    expect(left1).toHaveBeenCalledTimes(1);
    expect(left1.mock.calls[0]?.[0]).toMatchObject({ userId: '3001', previousChannelId: '4000' });

    // New callbacks: no new socket, and the new one is used.
    rerender({ ...base, onVoiceLeft: left2 });
    await flush();
    expect(ws.sockets).toHaveLength(1);
    act(() => {
      s.receive(eventFrame('voice.left', 'c4'));
      s.receive(eventFrame('voice.joined', 'c5'));
    });
    expect(left1).toHaveBeenCalledTimes(1);
    expect(left2).toHaveBeenCalledTimes(1);
    expect(joined).toHaveBeenCalledTimes(1);
  });

  it('reconnects when url, userId or token change, and closes on unmount', async () => {
    const ws = mockSockets();
    const base: UseVoiceChannelEventsOptions = {
      url: 'ws://t/api/ws',
      userId: '3001',
      jwtToken: 'jwt-a',
      onVoiceLeft: () => {},
      clientOptions: { WebSocket: ws.WebSocket },
    };
    const { rerender, unmount } = renderHook((props: UseVoiceChannelEventsOptions) => useVoiceChannelEvents(props), {
      initialProps: base,
    });
    await flush();
    expect(ws.sockets).toHaveLength(1);

    rerender({ ...base, jwtToken: 'jwt-b' });
    await flush();
    expect(ws.sockets).toHaveLength(2);
    expect(ws.sockets[0]?.closedByClient?.code).toBe(1000);
    ws.last().open();
    expect(ws.last().frames[0]).toMatchObject({ token: 'jwt-b' });

    rerender({ ...base, jwtToken: 'jwt-b', userId: '3002' });
    await flush();
    expect(ws.sockets).toHaveLength(3);

    rerender({ ...base, jwtToken: 'jwt-b', userId: '3002', url: 'ws://other/api/ws' });
    await flush();
    expect(ws.sockets).toHaveLength(4);
    expect(ws.last().url).toBe('ws://other/api/ws');

    unmount();
    expect(ws.last().closedByClient?.code).toBe(1000);
  });

  it('with getToken, a new getter identity does not reconnect', async () => {
    const ws = mockSockets();
    const { rerender } = renderHook(
      ({ n }: { n: number }) =>
        useVoiceChannelEvents({
          url: 'ws://t/api/ws',
          userId: '3001',
          getToken: () => Promise.resolve(`t${n}`),
          onVoiceLeft: () => {},
          scope: 'self',
          clientOptions: { WebSocket: ws.WebSocket },
        }),
      { initialProps: { n: 1 } },
    );
    await flush();
    rerender({ n: 2 });
    await flush();
    expect(ws.sockets).toHaveLength(1);
    ws.last().open();
    expect(ws.last().frames[0]).toEqual({ v: 1, type: 'auth', token: 't1', scope: 'self' });
  });
});

function ModalHarness({ onLeave = () => {} }: { onLeave?: () => void }): ReactNode {
  const [open, setOpen] = useState(false);
  return (
    <>
      <button type="button" onClick={() => setOpen(true)}>
        opener
      </button>
      <VoiceDropoutModal open={open} onRejoin={() => setOpen(false)} onLeaveGame={onLeave} onDismiss={() => setOpen(false)} />
    </>
  );
}

describe('VoiceDropoutModal', () => {
  it('renders nothing when closed', () => {
    render(<VoiceDropoutModal open={false} onRejoin={() => {}} onLeaveGame={() => {}} />);
    expect(screen.queryByRole('dialog')).toBeNull();
  });

  it('is an accessible modal dialog with the message, icon and both actions', () => {
    render(<VoiceDropoutModal open onRejoin={() => {}} onLeaveGame={() => {}} />);
    const dialog = screen.getByRole('dialog');
    expect(dialog.getAttribute('aria-modal')).toBe('true');
    const title = document.getElementById(dialog.getAttribute('aria-labelledby') ?? '');
    const desc = document.getElementById(dialog.getAttribute('aria-describedby') ?? '');
    expect(title?.textContent).toBe('Voice connection lost');
    expect(desc?.textContent).toContain('You dropped out of the voice channel');
    expect(dialog.querySelector('svg')).not.toBeNull();
    expect(screen.getByRole('button', { name: 'Rejoin' })).toBeTruthy();
    expect(screen.getByRole('button', { name: 'Leave Game' })).toBeTruthy();
  });

  it('focuses Rejoin, traps Tab both ways, handles Escape and restores focus', () => {
    render(<ModalHarness />);
    const opener = screen.getByRole('button', { name: 'opener' });
    opener.focus();
    fireEvent.click(opener);
    const rejoin = screen.getByRole('button', { name: 'Rejoin' });
    const leave = screen.getByRole('button', { name: 'Leave Game' });
    expect(document.activeElement).toBe(rejoin);
    const dialog = screen.getByRole('dialog');
    // Rejoin is last in DOM order: Tab wraps to Leave Game, Shift+Tab back.
    fireEvent.keyDown(dialog, { key: 'Tab' });
    expect(document.activeElement).toBe(leave);
    fireEvent.keyDown(dialog, { key: 'Tab', shiftKey: true });
    expect(document.activeElement).toBe(rejoin);
    fireEvent.keyDown(dialog, { key: 'Escape' });
    expect(screen.queryByRole('dialog')).toBeNull();
    expect(document.activeElement).toBe(opener);
  });

  it('Escape without onDismiss keeps the dialog open', () => {
    render(<VoiceDropoutModal open onRejoin={() => {}} onLeaveGame={() => {}} />);
    fireEvent.keyDown(screen.getByRole('dialog'), { key: 'Escape' });
    expect(screen.queryByRole('dialog')).not.toBeNull();
  });

  it('while loading: busy, focusable, and does not call onRejoin again', () => {
    const onRejoin = vi.fn();
    const onLeave = vi.fn();
    render(<VoiceDropoutModal open isRejoinLoading onRejoin={onRejoin} onLeaveGame={onLeave} />);
    const btn = screen.getByRole('button', { name: 'Rejoining…' });
    expect(btn.getAttribute('aria-busy')).toBe('true');
    expect(btn.getAttribute('aria-disabled')).toBe('true');
    fireEvent.click(btn);
    expect(onRejoin).not.toHaveBeenCalled();
    fireEvent.click(screen.getByRole('button', { name: 'Leave Game' }));
    expect(onLeave).toHaveBeenCalledTimes(1);
  });
});

describe('GameRoom', () => {
  beforeEach(() => {
    vi.useRealTimers();
  });

  it('after giving up, the status badge reports it and reconnects on click', async () => {
    const ws = mockSockets();
    render(
      <GameRoom
        userId="3001"
        getToken={() => Promise.resolve('jwt-1')}
        onLeaveGame={() => {}}
        wsUrl="ws://t/api/ws"
        clientOptions={{ WebSocket: ws.WebSocket, backoff: { maxAttempts: 0 } }}
      />,
    );
    await flush();
    act(() => ws.last().serverClose(1006));
    const badge = screen.getByTestId('connection-status');
    expect(badge.getAttribute('data-status')).toBe('failed');
    expect(screen.getByTestId('toast-error').textContent).toContain('Lost the live connection');
    fireEvent.click(badge);
    await flush();
    expect(ws.sockets).toHaveLength(2);
    act(() => {
      ws.last().open();
      ws.last().ack();
    });
    expect(badge.getAttribute('data-status')).toBe('open');
  });

  function setup(answers: { status: number; body: unknown }[]) {
    const ws = mockSockets();
    const requests: { url: string; init: RequestInit | undefined }[] = [];
    const fetchImpl = vi.fn((url: string, init?: RequestInit) => {
      requests.push({ url, init });
      const a = answers.shift() ?? { status: 500, body: {} };
      return Promise.resolve(new Response(JSON.stringify(a.body), { status: a.status }));
    });
    const onLeave = vi.fn();
    render(
      <GameRoom
        userId="3001"
        guildId="2000"
        getToken={() => Promise.resolve('jwt-1')}
        onLeaveGame={onLeave}
        wsUrl="ws://t/api/ws"
        initialChannelId="4000"
        channelName={(id) => (id === '4000' ? 'General' : undefined)}
        fetchImpl={fetchImpl}
        clientOptions={{ WebSocket: ws.WebSocket }}
      />,
    );
    return { ws, requests, onLeave };
  }

  async function connected(ws: ReturnType<typeof mockSockets>) {
    await flush();
    const s = ws.last();
    act(() => {
      s.open();
      s.ack('c0');
    });
    return s;
  }

  it('voice.left opens the modal with a warning toast; Rejoin posts the contract request and closes on ok', async () => {
    const { ws, requests } = setup([
      { status: 200, body: { ok: true, guildId: '2000', channelId: '4000', url: 'https://discord.com/channels/2000/4000' } },
    ]);
    const s = await connected(ws);
    expect(screen.getByTestId('connection-status').getAttribute('data-status')).toBe('open');
    act(() => s.receive(eventFrame('voice.left', 'c1', { previousChannelId: '4000' })));
    expect(screen.getByRole('dialog')).toBeTruthy();
    expect(screen.getByTestId('toast-warning').textContent).toContain('General');
    await act(async () => {
      fireEvent.click(screen.getByRole('button', { name: 'Rejoin' }));
    });
    await flush();
    expect(requests).toHaveLength(1);
    expect(requests[0]?.url).toBe('/api/voice/rejoin');
    expect(requests[0]?.init?.method).toBe('POST');
    expect((requests[0]?.init?.headers as Record<string, string>)['Authorization']).toBe('Bearer jwt-1');
    expect(JSON.parse(String(requests[0]?.init?.body))).toEqual({ guildId: '2000', channelId: '4000' });
    expect(screen.queryByRole('dialog')).toBeNull();
    expect(screen.getByTestId('toast-success')).toBeTruthy();
  });

  it('a failed rejoin keeps the modal open with the error message and allows a retry', async () => {
    const { ws, requests } = setup([
      { status: 409, body: { ok: false, error: 'channel_full', message: 'This voice channel is full' } },
      { status: 200, body: { ok: true, guildId: '2000', channelId: '4002', url: 'https://discord.com/channels/2000/4002' } },
    ]);
    const s = await connected(ws);
    act(() => s.receive(eventFrame('voice.left', 'c1', { previousChannelId: '4002' })));
    await act(async () => {
      fireEvent.click(screen.getByRole('button', { name: 'Rejoin' }));
    });
    await flush();
    expect(screen.getByTestId('toast-error').textContent).toContain('This voice channel is full');
    expect(screen.getByRole('dialog')).toBeTruthy();
    await act(async () => {
      fireEvent.click(screen.getByRole('button', { name: 'Rejoin' }));
    });
    await flush();
    expect(requests).toHaveLength(2);
    expect(screen.queryByRole('dialog')).toBeNull();
  });

  it('a later voice.joined closes the modal; other users and guilds are ignored; Leave Game leaves', async () => {
    const { ws, onLeave } = setup([]);
    const s = await connected(ws);
    act(() => s.receive(eventFrame('voice.left', 'c1', { userId: '3002' })));
    act(() => s.receive(eventFrame('voice.left', 'c2', { guildId: '2001' })));
    expect(screen.queryByRole('dialog')).toBeNull();
    act(() => s.receive(eventFrame('voice.left', 'c3')));
    expect(screen.getByRole('dialog')).toBeTruthy();
    expect(screen.getByTestId('voice-state').textContent).toBe('Not in voice');
    act(() => s.receive(eventFrame('voice.joined', 'c4')));
    expect(screen.queryByRole('dialog')).toBeNull();
    expect(screen.getByTestId('voice-state').textContent).toContain('General');
    act(() => s.receive(eventFrame('voice.left', 'c5')));
    fireEvent.click(screen.getByRole('dialog').querySelector('.vw-btn--ghost') as HTMLElement);
    expect(onLeave).toHaveBeenCalledTimes(1);
  });
});
