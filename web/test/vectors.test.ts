import { describe, expect, it } from 'vitest';
import { CLOSE_REACTIONS, closeReaction, type CloseReaction } from '../src/client.ts';
import { parseClientFrame, parseServerFrame, parseVoiceEvent } from '../src/protocol.ts';
import { loadVectors, VECTORS_DIR } from './vectors.ts';

const vectors = loadVectors();

// The vectors' clientAction names, as the reactions of the client.
const ACTIONS: Record<string, (r: CloseReaction) => boolean> = {
  nothing: (r) => !r.reconnect,
  reconnect: (r) => r.reconnect && !r.newToken,
  reconnect_resume: (r) => r.reconnect && !r.newToken,
  report_backoff: (r) => r.reconnect && r.report !== null,
  new_token: (r) => r.reconnect && r.newToken,
  new_token_resume: (r) => r.reconnect && r.newToken,
  backoff: (r) => r.reconnect,
};

describe(`protocol vectors (${VECTORS_DIR})`, () => {
  it('exist', () => {
    expect(vectors, 'protocol/vectors is part of the repository').not.toBeNull();
  });
  const v = vectors ?? { clientFrames: [], serverFrames: [], events: [], closeCodes: [] };

  it('are present in every group', () => {
    for (const list of [v.clientFrames, v.serverFrames, v.events]) {
      expect(list.some((x) => x.valid)).toBe(true);
      expect(list.some((x) => !x.valid)).toBe(true);
    }
    expect(v.closeCodes.length).toBeGreaterThan(0);
  });

  it('server frames: valid ones parse, invalid ones are rejected', () => {
    for (const f of v.serverFrames) {
      const r = parseServerFrame(f.text);
      expect(r.ok, `${f.name}: ${f.text} ${r.ok ? '' : r.reason}`).toBe(f.valid);
    }
  });

  it('client frames: the client-side parser agrees (the mock server uses it)', () => {
    for (const f of v.clientFrames) {
      const r = parseClientFrame(f.text);
      expect(r.ok, `${f.name}: ${f.text} ${r.ok ? '' : r.reason}`).toBe(f.valid);
    }
  });

  it('events: the strict section-1 validator agrees', () => {
    for (const e of v.events) {
      let json: unknown;
      try {
        json = JSON.parse(e.text);
      } catch {
        expect(e.valid, `${e.name} is not JSON`).toBe(false);
        continue;
      }
      const r = parseVoiceEvent(json, { strict: true });
      expect(r.ok, `${e.name}: ${e.text} ${r.ok ? '' : r.reason}`).toBe(e.valid);
    }
  });

  it('valid events keep unknown fields through an event frame', () => {
    for (const e of v.events.filter((x) => x.valid)) {
      const payload = JSON.parse(e.text) as Record<string, unknown>;
      const frame = JSON.stringify({ v: 1, type: 'event', event: payload['type'], cursor: '1-1', payload });
      const r = parseServerFrame(frame);
      expect(r.ok, e.name).toBe(true);
      if (r.ok && r.frame.type === 'event') expect(r.frame.payload).toEqual(payload);
    }
  });

  it('close codes: the client reacts as each vector says, and knows every code', () => {
    const codes = new Set(v.closeCodes.map((c) => c.code));
    for (const c of v.closeCodes) {
      expect(CLOSE_REACTIONS[c.code], `close code ${c.code}`).toBeDefined();
      if (c.clientAction !== undefined) {
        const check = ACTIONS[c.clientAction];
        expect(check, `known clientAction ${c.clientAction}`).toBeDefined();
        expect(check?.(closeReaction(c.code)), `${c.code} → ${c.clientAction}`).toBe(true);
      }
    }
    for (const code of Object.keys(CLOSE_REACTIONS)) expect(codes.has(Number(code)), `vector for ${code}`).toBe(true);
  });
});
