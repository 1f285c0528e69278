// Loads the protocol test vectors of ../protocol/vectors/*.json. The loader
// walks whatever JSON it finds and classifies frames by the names around
// them (client/server, valid/invalid), so small changes of layout in the
// vector files do not break it; a vector it cannot classify is counted.

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const VECTORS_DIR = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'protocol', 'vectors');

export type Direction = 'client' | 'server';

export interface FrameVector {
  direction: Direction;
  valid: boolean;
  /** The frame as sent on the wire. */
  text: string;
  name: string;
}

export interface CloseCodeVector {
  code: number;
  raw: unknown;
}

export interface Vectors {
  files: string[];
  frames: FrameVector[];
  closeCodes: CloseCodeVector[];
  unclassified: string[];
}

const FRAME_KEYS = ['frame', 'json', 'text', 'raw', 'wire', 'input', 'data', 'message', 'value', 'bytes'];

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function directionOf(words: string): Direction | null {
  const w = words.toLowerCase();
  if (/client[_ -]?to[_ -]?server|c2s|to[_ -]?server|\bclient\b|client_frames|clientframes|client/.test(w) && !/server[_ -]?to[_ -]?client|s2c/.test(w)) {
    // "client" alone, or client→server
    if (/server/.test(w) && !/client[_ -]?to[_ -]?server|c2s|to[_ -]?server/.test(w) && w.lastIndexOf('server') > w.lastIndexOf('client')) return 'server';
    return 'client';
  }
  if (/server/.test(w) || /s2c/.test(w)) return 'server';
  return null;
}

function validityOf(words: string): boolean | null {
  const w = words.toLowerCase();
  if (/invalid|reject|bad|malformed|error_cases/.test(w)) return false;
  if (/valid|accept|good|ok\b/.test(w)) return true;
  return null;
}

function frameText(x: unknown): string | null {
  if (typeof x === 'string') return x;
  if (isRecord(x) || Array.isArray(x) || typeof x === 'number' || x === null || typeof x === 'boolean') return JSON.stringify(x);
  return null;
}

function walkFrames(node: unknown, path: string[], out: Vectors, file: string): void {
  if (Array.isArray(node)) {
    node.forEach((item, i) => classify(item, [...path, String(i)], out, file));
    return;
  }
  if (isRecord(node)) {
    for (const [k, v] of Object.entries(node)) walkFrames(v, [...path, k], out, file);
  }
}

function classify(item: unknown, path: string[], out: Vectors, file: string): void {
  let text: string | null = null;
  let words = path.join('/');
  let name = `${file}:${path.join('/')}`;
  let valid: boolean | null = null;
  let direction: Direction | null = null;
  if (isRecord(item)) {
    const key = FRAME_KEYS.find((k) => k in item);
    if (key === undefined) {
      if ('v' in item || 'type' in item) text = JSON.stringify(item);
      else {
        // A nested group such as {"valid": [...], "invalid": [...]}.
        walkFrames(item, path, out, file);
        return;
      }
    } else {
      text = frameText(item[key]);
    }
    for (const k of ['name', 'description', 'desc', 'id', 'comment']) {
      if (typeof item[k] === 'string') name = `${name} (${item[k] as string})`;
    }
    if (typeof item['valid'] === 'boolean') valid = item['valid'];
    else if (typeof item['ok'] === 'boolean') valid = item['ok'];
    else if (typeof item['expect'] === 'string') valid = validityOf(item['expect']);
    else if (typeof item['result'] === 'string') valid = validityOf(item['result']);
    for (const k of ['direction', 'dir', 'from', 'sender', 'side', 'kind']) {
      if (typeof item[k] === 'string') words = `${words}/${item[k] as string}`;
    }
  } else if (typeof item === 'string') {
    text = item;
  }
  direction = directionOf(words);
  if (valid === null) valid = validityOf(path.join('/'));
  if (text === null || direction === null || valid === null) {
    out.unclassified.push(name);
    return;
  }
  out.frames.push({ direction, valid, text, name });
}

function collectCloseCodes(node: unknown, out: Vectors): void {
  if (Array.isArray(node)) {
    for (const item of node) {
      if (typeof item === 'number') out.closeCodes.push({ code: item, raw: item });
      else if (isRecord(item) && typeof item['code'] === 'number') out.closeCodes.push({ code: item['code'], raw: item });
      else collectCloseCodes(item, out);
    }
    return;
  }
  if (isRecord(node)) {
    for (const [k, v] of Object.entries(node)) {
      if (/^\d{4}$/.test(k)) out.closeCodes.push({ code: Number(k), raw: v });
      else collectCloseCodes(v, out);
    }
  }
}

export function loadVectors(dir = VECTORS_DIR): Vectors | null {
  if (!existsSync(dir)) return null;
  const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  if (files.length === 0) return null;
  const out: Vectors = { files, frames: [], closeCodes: [], unclassified: [] };
  for (const file of files) {
    const json = JSON.parse(readFileSync(join(dir, file), 'utf8')) as unknown;
    if (/close/i.test(file)) collectCloseCodes(json, out);
    else if (/frame/i.test(file)) walkFrames(json, [file.replace(/\.json$/, '')], out, file);
  }
  return out;
}
