import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` proxies /ws to a local `streamcore serve` (port 8000 by default).
const target = process.env.STREAMCORE_URL ?? "ws://127.0.0.1:8000";

export default defineConfig({
  plugins: [react()],
  // streamcore-client is linked from ../../clients/js: one React and one Zustand for both.
  resolve: { dedupe: ["react", "react-dom", "zustand"] },
  server: { proxy: { "/ws": { target, ws: true } } },
  test: { include: ["e2e/**/*.test.ts"], testTimeout: 90_000, hookTimeout: 90_000 },
});
