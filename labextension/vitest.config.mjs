// Unit tests of the panel's logic in a DOM (jsdom): no JupyterLab, no server.
import { readFileSync } from 'node:fs';
import { defineConfig } from 'vitest/config';

// JupyterLab's icons import their SVG files as text (webpack's raw loader in a real build): the same here.
const svgAsText = {
  name: 'svg-as-text',
  enforce: 'pre',
  load(id) {
    return id.endsWith('.svg') ? `export default ${JSON.stringify(readFileSync(id, 'utf8'))};` : null;
  }
};

export default defineConfig({
  plugins: [svgAsText],
  test: {
    environment: 'jsdom',
    include: ['test/**/*.test.ts'],
    setupFiles: ['test/setup.ts'],
    // @jupyter/web-components (under @jupyterlab/ui-components' icons) ships ESM without file extensions: Vite
    // resolves it when it is inlined, Node's loader does not.
    server: { deps: { inline: [/@jupyterlab\/ui-components/, /@jupyter\/web-components/, /@microsoft\/fast-/] } }
  }
});
