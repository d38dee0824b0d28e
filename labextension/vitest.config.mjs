// Unit tests of the panel's logic in a DOM (jsdom): no JupyterLab, no server.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: { environment: 'jsdom', include: ['test/**/*.test.ts'], setupFiles: ['test/setup.ts'] }
});
