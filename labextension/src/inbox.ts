// The panel's Inbox section: the spawned calls (and scheduled runs) of the last day, across kernel restarts,
// each with its state, start, duration and a button that copies the code fetching it into a kernel.
import { ICall } from './api';

export const INBOX_PATH = 'calls?limit=100&since_s=86400'; // what the Inbox lists: the last day's calls

/** The code that fetches ``call`` into any kernel on this runtime (as ``rc.calls()``'s ``snippet``). */
export function reattachSnippet(call: ICall): string {
  return [
    'import remotecell as rc',
    `call = rc.FunctionCall.from_id("${call.id}")  # ${call.function}`,
    'call.get()'
  ].join('\n');
}

function duration(call: ICall, nowS: number): string {
  const seconds = Math.max(0, (call.finished_at || nowS) - call.created_at);
  if (seconds < 60) {
    return `${seconds.toFixed(1)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min ${Math.floor(seconds % 60)} s`;
  }
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** Copy ``text``: the Clipboard API where the page may use it, else a selected textarea and execCommand. */
async function copyText(text: string): Promise<void> {
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

/** One row of the Inbox: function, state, start, duration, id, and the Copy button. */
export function inboxRow(call: ICall, nowS: number): HTMLElement {
  const row = document.createElement('div');
  row.className = `rc-row rc-inbox-call rc-state-${call.state}`;
  row.dataset.inboxCall = call.id;
  const state = document.createElement('span');
  state.className = 'rc-inbox-state';
  state.textContent = call.state;
  const started = new Date(call.created_at * 1000).toLocaleTimeString();
  const button = document.createElement('button');
  button.className = 'rc-copy jp-Button';
  button.textContent = 'Copy';
  button.title = 'copy the code that fetches this call into a kernel';
  button.onclick = event => {
    event.stopPropagation();
    void copyText(reattachSnippet(call)).then(
      () => (button.textContent = 'Copied'),
      () => (button.textContent = 'Copy failed')
    );
  };
  const name = document.createElement('b');
  name.textContent = call.function;
  row.append(name, ' ', state, ` started ${started}, ${duration(call, nowS)} `, button);
  return row;
}
