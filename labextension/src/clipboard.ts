// The snippet that reattaches to a call, and copying it: the Clipboard API, else a selected textarea.
import { ICall } from './api';

/** The code that fetches ``call`` into any kernel on this runtime (as ``rc.calls()``'s ``snippet``). */
export function reattachSnippet(call: Pick<ICall, 'id' | 'function'>): string {
  return [
    'import remotecell as rc',
    `call = rc.FunctionCall.from_id("${call.id}")  # ${call.function}`,
    'call.get()'
  ].join('\n');
}

/** Copy ``text``: the Clipboard API where the page may use it, else a selected textarea and execCommand. */
export async function copyText(text: string): Promise<void> {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement('textarea');
  area.value = text;
  document.body.append(area);
  area.select();
  document.execCommand('copy');
  area.remove();
}
