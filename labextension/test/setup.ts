// jsdom has no DragEvent; @lumino/dragdrop (under @lumino/widgets) subclasses it at import, as in a browser.
if (typeof globalThis.DragEvent === 'undefined') {
  (globalThis as Record<string, unknown>).DragEvent = class DragEvent extends MouseEvent {};
}
// jsdom has no matchMedia; @jupyterlab/ui-components' web components ask it about the color scheme at import.
if (typeof window.matchMedia !== 'function') {
  window.matchMedia = (query: string) =>
    ({
      matches: false,
      media: query,
      onchange: null,
      addListener: () => undefined,
      removeListener: () => undefined,
      addEventListener: () => undefined,
      removeEventListener: () => undefined,
      dispatchEvent: () => false
    }) as MediaQueryList;
}
