// jsdom has no DragEvent; @lumino/dragdrop (under @lumino/widgets) subclasses it at import, as in a browser.
if (typeof globalThis.DragEvent === 'undefined') {
  (globalThis as Record<string, unknown>).DragEvent = class DragEvent extends MouseEvent {};
}
