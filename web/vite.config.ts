import { resolve } from 'node:path';
import { defineConfig } from 'vite';

// Multi-page build: the Rust `voicewatch demo` process serves web/dist as
// static files, so every page is a real HTML file (no SPA fallback needed).
export default defineConfig({
  root: resolve(import.meta.dirname, 'pages'),
  publicDir: false,
  esbuild: { jsx: 'automatic' },
  build: {
    outDir: resolve(import.meta.dirname, 'dist'),
    emptyOutDir: true,
    target: 'es2022',
    rollupOptions: {
      input: {
        index: resolve(import.meta.dirname, 'pages/index.html'),
        room: resolve(import.meta.dirname, 'pages/room.html'),
        simulator: resolve(import.meta.dirname, 'pages/simulator.html'),
      },
    },
  },
  server: {
    proxy: {
      '/api': { target: 'http://127.0.0.1:8080', ws: true },
    },
  },
});
