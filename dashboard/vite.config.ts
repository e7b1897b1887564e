/// <reference types="vitest/config" />
// Vite: React + Tailwind; in development the API and the WebSocket go to a running hub.
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";
import tailwindcss from "@tailwindcss/vite";

const hub = process.env.ETP_HUB ?? "http://127.0.0.1:8100";

export default defineConfig({
  plugins: [react(), tailwindcss()],
  server: {
    proxy: {
      "/api": { target: hub, changeOrigin: true },
      "/ws": { target: hub, ws: true, changeOrigin: true },
    },
  },
  build: { outDir: "dist", sourcemap: false, chunkSizeWarningLimit: 700 },
  test: { include: ["src/**/*.test.ts"] },
});
