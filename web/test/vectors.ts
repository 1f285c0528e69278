// Loads the protocol test vectors of ../protocol/vectors (written by the
// protocol crate's generator). Shapes, as of protocol/vectors:
//   frames.json      {"client"|"server": {"valid"|"invalid": [{name, json, frame?|error?}]}}
//   events.json      {"valid"|"invalid": [{name, json, type?|error?}]}
//   close_codes.json [{code, name, errorCode, clientAction}]
// The loader accepts a frame given as `json` (wire text) or as an object, and
// ignores fields it does not use, so additive changes do not break it.

import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const VECTORS_DIR = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'protocol', 'vectors');

export interface TextVector {
  name: string;
  /** The text as sent on the wire. */
  text: string;
  valid: boolean;
  /** The error class the Rust side expects, for invalid vectors. */
  error?: string;
}

export interface CloseCodeVector {
  code: number;
  name?: string;
  errorCode?: string;
  clientAction?: string;
}

export interface Vectors {
  clientFrames: TextVector[];
  serverFrames: TextVector[];
  events: TextVector[];
  closeCodes: CloseCodeVector[];
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function readJson(file: string): unknown {
  const path = join(VECTORS_DIR, file);
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as unknown) : undefined;
}

function textVectors(group: unknown, where: string): TextVector[] {
  if (!isRecord(group)) return [];
  const out: TextVector[] = [];
  for (const [validity, valid] of [
    ['valid', true],
    ['invalid', false],
  ] as const) {
    const list = group[validity];
    if (!Array.isArray(list)) continue;
    list.forEach((item: unknown, i) => {
      const name = `${where}.${validity}[${i}]${isRecord(item) && typeof item['name'] === 'string' ? ` ${item['name']}` : ''}`;
      let text: string | undefined;
      if (typeof item === 'string') text = item;
      else if (isRecord(item)) {
        const raw = item['json'] ?? item['text'] ?? item['raw'];
        if (typeof raw === 'string') text = raw;
        else if (raw !== undefined) text = JSON.stringify(raw);
      }
      if (text === undefined) throw new Error(`vector ${name} has no wire text (json)`);
      const error = isRecord(item) && typeof item['error'] === 'string' ? item['error'] : undefined;
      out.push({ name, text, valid, ...(error !== undefined ? { error } : {}) });
    });
  }
  return out;
}

export function loadVectors(): Vectors | null {
  if (!existsSync(VECTORS_DIR)) return null;
  const frames = readJson('frames.json');
  const events = readJson('events.json');
  const close = readJson('close_codes.json');
  const closeList = Array.isArray(close) ? close : isRecord(close) && Array.isArray(close['codes']) ? close['codes'] : [];
  return {
    clientFrames: isRecord(frames) ? textVectors(frames['client'], 'frames.client') : [],
    serverFrames: isRecord(frames) ? textVectors(frames['server'], 'frames.server') : [],
    events: textVectors(events, 'events'),
    closeCodes: closeList.filter(isRecord).flatMap((c): CloseCodeVector[] =>
      typeof c['code'] === 'number'
        ? [
            {
              code: c['code'],
              ...(typeof c['name'] === 'string' ? { name: c['name'] } : {}),
              ...(typeof c['errorCode'] === 'string' ? { errorCode: c['errorCode'] } : {}),
              ...(typeof c['clientAction'] === 'string' ? { clientAction: c['clientAction'] } : {}),
            },
          ]
        : [],
    ),
  };
}
