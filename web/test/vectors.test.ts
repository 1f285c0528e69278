import { describe, expect, it } from 'vitest';
import { closeReaction, CLOSE_REACTIONS } from '../src/client.ts';
import { parseClientFrame, parseServerFrame } from '../src/protocol.ts';
import { loadVectors, VECTORS_DIR } from './vectors.ts';

const vectors = loadVectors();

describe.skipIf(vectors === null)(`protocol vectors (${VECTORS_DIR})`, () => {
  const v = vectors!;

  it('classifies every frame vector', () => {
    expect(v.unclassified).toEqual([]);
  });

  it('has frame vectors in both directions', () => {
    const frames = v.frames;
    if (!v.files.some((f) => /frame/i.test(f))) return;
    expect(frames.some((f) => f.direction === 'server' && f.valid)).toBe(true);
    expect(frames.some((f) => f.direction === 'client' && f.valid)).toBe(true);
  });

  it('parses valid server frames and rejects invalid ones', () => {
    for (const f of v.frames.filter((x) => x.direction === 'server')) {
      const r = parseServerFrame(f.text);
      expect(r.ok, `${f.name}: ${f.text} ${r.ok ? '' : r.reason}`).toBe(f.valid);
    }
  });

  it('agrees with the client frame vectors', () => {
    for (const f of v.frames.filter((x) => x.direction === 'client')) {
      const r = parseClientFrame(f.text);
      expect(r.ok, `${f.name}: ${f.text} ${r.ok ? '' : r.reason}`).toBe(f.valid);
    }
  });

  it('knows a reaction for every close code of the contract', () => {
    if (!v.files.some((f) => /close/i.test(f))) return;
    const codes = new Set(v.closeCodes.map((c) => c.code));
    expect(codes.size).toBeGreaterThan(0);
    for (const code of codes) expect(CLOSE_REACTIONS[code], `close code ${code}`).toBeDefined();
    for (const code of Object.keys(CLOSE_REACTIONS)) expect(codes.has(Number(code)), `vector for ${code}`).toBe(true);
    expect(closeReaction(1000).reconnect).toBe(false);
  });
});

if (vectors === null) {
  console.warn(`protocol vectors not found in ${VECTORS_DIR}; vector tests skipped`);
}
