// The panel's lists as sortable tables: one column set per list, the actions a row offers, and its state badge.
import { IApp, ICall, IPool, ISandbox, ISchedule, IStatus, IStore } from './api';
import { badge } from './badges';
import { copyText, reattachSnippet } from './clipboard';
import { iconButton, setLabel } from './icons';
import { LogSource } from './logs';
import { SortableTable } from './tables';

/** What a row's buttons do: the panel's (a POST then a redraw, or its logs view). */
export interface IActions {
  post(path: string): Promise<void>;
  showLogs(source: LogSource): Promise<void>;
}

const ACTIVE_STATES = new Set(['queued', 'running']);

export function containers(pool: IPool): string {
  const parts = Object.entries(pool.containers).map(([state, n]) => `${n} ${state}`);
  return parts.join(', ') || 'no containers';
}

function containerCount(pool: IPool): number {
  return Object.values(pool.containers).reduce((n, c) => n + c, 0);
}

/** A function's state at a glance: running while an input runs, queued while inputs wait, else idle/scaled to 0. */
export function functionState(pool: Pick<IPool, 'running' | 'queued' | 'containers'>): string {
  if (pool.running > 0) {
    return 'running';
  }
  if (pool.queued > 0) {
    return 'queued';
  }
  return Object.values(pool.containers).some(n => n > 0) ? 'idle' : 'scaled to 0';
}

export function duration(call: ICall, nowS: number): number {
  return Math.max(0, (call.finished_at || nowS) - call.created_at);
}

export function elapsed(call: ICall, nowS: number): string {
  return `${duration(call, nowS).toFixed(1)} s`;
}

/** A duration as people read it: ``2.5 s``, ``3 min 4 s``, ``1 h 2 min``. */
export function humanDuration(seconds: number): string {
  if (seconds < 60) {
    return `${seconds.toFixed(1)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min ${Math.floor(seconds % 60)} s`;
  }
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function time(unixS: number | null | undefined): string {
  return unixS ? new Date(unixS * 1000).toLocaleString() : '';
}

function bold(text: string): HTMLElement {
  const node = document.createElement('b');
  node.textContent = text;
  return node;
}

function span(text: string, className: string): HTMLElement {
  const node = document.createElement('span');
  node.className = className;
  node.textContent = text;
  return node;
}

function withClass(node: HTMLElement, className: string): HTMLElement {
  node.classList.add(className);
  return node;
}

function cells(...nodes: (Node | string)[]): DocumentFragment {
  const fragment = document.createDocumentFragment();
  fragment.append(...nodes);
  return fragment;
}

/** A button that does ``action`` once (disabled until the next redraw); a click on it is not its row's. */
function actionButton(label: string, className: string, title: string, action: () => unknown): HTMLButtonElement {
  const button = iconButton(label, className, title);
  button.onclick = event => {
    event.stopPropagation();
    button.disabled = true;
    void action();
  };
  return button;
}

/** The Copy button of a call: copies the snippet that reattaches to it, then says Copied. */
export function copyButton(call: ICall): HTMLButtonElement {
  const button = iconButton('Copy', 'rc-copy', 'copy the code that reattaches to this call in a kernel');
  button.dataset.snippet = reattachSnippet(call);
  button.onclick = event => {
    event.stopPropagation();
    void copyText(reattachSnippet(call)).then(
      () => setLabel(button, 'Copied'),
      () => setLabel(button, 'Copy failed')
    );
  };
  return button;
}

export function appsTable(): SortableTable<IApp> {
  return new SortableTable<IApp>(
    'rc-app',
    [
      { key: 'name', label: 'App', cell: a => bold(a.name), sort: a => a.name },
      { key: 'state', label: 'State', cell: a => badge(a.mode), sort: a => a.mode },
      {
        key: 'functions',
        label: 'Functions',
        cell: a => a.functions.join(', ') || 'no functions',
        sort: a => a.functions.length
      },
      { key: 'id', label: 'ID', cell: a => a.app_id }
    ],
    'no apps',
    (tr, a) => (tr.dataset.app = a.name)
  );
}

/** A pool with the app it belongs to (from ``status.apps``): what a Functions row shows. */
export interface IFunctionRow extends IPool {
  app?: string;
}

export function functionRows(status: IStatus): IFunctionRow[] {
  const appOf = new Map(status.apps.flatMap(a => a.functions.map(f => [f, a.name] as [string, string])));
  return status.pools.map(p => ({ ...p, app: appOf.get(p.function) }));
}

export function functionsTable(actions: IActions): SortableTable<IFunctionRow> {
  return new SortableTable<IFunctionRow>(
    'rc-function',
    [
      { key: 'name', label: 'Function', cell: p => bold(p.function), sort: p => p.function },
      { key: 'app', label: 'App', cell: p => p.app ?? '' },
      { key: 'state', label: 'State', cell: p => badge(functionState(p)), sort: p => functionState(p) },
      { key: 'containers', label: 'Containers', cell: p => containers(p), sort: containerCount },
      { key: 'queued', label: 'Queued', cell: p => String(p.queued), sort: p => p.queued },
      { key: 'running', label: 'Running', cell: p => String(p.running), sort: p => p.running },
      { key: 'waiting', label: 'Waiting for', cell: p => p.waiting_reason },
      {
        key: 'actions',
        label: '',
        cell: p => {
          const app = p.app;
          if (app === undefined) {
            return '';
          }
          const button = iconButton('Logs', 'rc-function-logs', 'follow what this function prints');
          button.onclick = () => void actions.showLogs({ app, function: p.function, next: 0 });
          return button;
        },
        sort: () => 0
      }
    ],
    'no functions',
    (tr, p) => (tr.dataset.function = p.function)
  );
}

export function callsTable(actions: IActions, nowS: () => number): SortableTable<ICall> {
  return new SortableTable<ICall>(
    'rc-call',
    [
      { key: 'function', label: 'Function', cell: c => withClass(bold(c.function), 'rc-call-function') },
      {
        key: 'state',
        label: 'State',
        cell: c => cells(withClass(badge(c.state), 'rc-call-state'), c.reason ? ` ${c.reason}` : ''),
        sort: c => c.state
      },
      { key: 'attempts', label: 'Tries', cell: c => String(c.attempts), sort: c => c.attempts },
      { key: 'started', label: 'Started', cell: c => time(c.created_at), sort: c => c.created_at },
      { key: 'elapsed', label: 'Took', cell: c => elapsed(c, nowS()), sort: c => duration(c, nowS()) },
      { key: 'id', label: 'ID', cell: c => span(c.id, 'rc-call-id'), sort: c => c.id },
      {
        key: 'actions',
        label: '',
        cell: c => {
          const logs = iconButton('Logs', 'rc-call-logs', 'follow what this call prints');
          logs.onclick = event => {
            event.stopPropagation();
            void actions.showLogs({ call: c.id });
          };
          const buttons: Node[] = [logs, copyButton(c)];
          if (ACTIVE_STATES.has(c.state)) {
            buttons.push(
              actionButton('Cancel', 'rc-cancel', 'stop this call', () => actions.post(`calls/${c.id}/cancel`))
            );
          }
          return cells(...buttons);
        },
        sort: () => 0
      }
    ],
    'no spawned calls',
    (tr, c) => {
      tr.dataset.callId = c.id;
      tr.classList.add(`rc-state-${c.state}`);
      tr.title = 'show its logs';
      tr.onclick = () => void actions.showLogs({ call: c.id });
    }
  );
}

export function inboxTable(nowS: () => number): SortableTable<ICall> {
  return new SortableTable<ICall>(
    'rc-inbox-call',
    [
      { key: 'function', label: 'Function', cell: c => bold(c.function), sort: c => c.function },
      { key: 'state', label: 'State', cell: c => withClass(badge(c.state), 'rc-inbox-state'), sort: c => c.state },
      { key: 'started', label: 'Started', cell: c => time(c.created_at), sort: c => c.created_at },
      {
        key: 'duration',
        label: 'Took',
        cell: c => humanDuration(duration(c, nowS())),
        sort: c => duration(c, nowS())
      },
      { key: 'id', label: 'ID', cell: c => c.id },
      { key: 'actions', label: '', cell: c => copyButton(c), sort: () => 0 }
    ],
    'no calls in the last day',
    (tr, c) => (tr.dataset.inboxCall = c.id)
  );
}

function scheduleState(s: ISchedule): string {
  return s.paused ? 'paused' : 'scheduled';
}

export function schedulesTable(actions: IActions): SortableTable<ISchedule> {
  const path = (s: ISchedule) => `schedules/${encodeURIComponent(s.app)}/${encodeURIComponent(s.function)}`;
  return new SortableTable<ISchedule>(
    'rc-schedule',
    [
      { key: 'function', label: 'Function', cell: s => bold(s.function), sort: s => s.function },
      { key: 'app', label: 'App', cell: s => s.app },
      { key: 'schedule', label: 'Schedule', cell: s => s.description },
      {
        key: 'state',
        label: 'State',
        cell: s => withClass(badge(scheduleState(s)), 'rc-schedule-state'),
        sort: scheduleState
      },
      {
        key: 'next',
        label: 'Next run',
        cell: s => (s.paused ? '' : time(s.next_at) || 'not planned'),
        sort: s => (s.paused ? Infinity : (s.next_at ?? Infinity))
      },
      {
        key: 'last',
        label: 'Last run',
        cell: s =>
          s.last
            ? cells(withClass(badge(s.last.state), 'rc-schedule-last'), ` ${s.last.trigger}, ${time(s.last.at)}`)
            : 'none yet',
        sort: s => s.last?.at ?? 0
      },
      {
        key: 'actions',
        label: '',
        cell: s => {
          const [label, action] = s.paused ? ['Resume', 'resume'] : ['Pause', 'pause'];
          return cells(
            actionButton(label, '', `${action} this schedule`, () => actions.post(`${path(s)}/${action}`)),
            actionButton('Run now', '', 'run it once now', () => actions.post(`${path(s)}/run`))
          );
        },
        sort: () => 0
      }
    ],
    'no schedules',
    (tr, s) => (tr.dataset.schedule = `${s.app}/${s.function}`)
  );
}

/** One live web endpoint: ``APP/LABEL`` and its URL (``status.web.endpoints``). */
export interface IEndpoint {
  name: string;
  url: string;
}

export function endpointRows(status: IStatus): IEndpoint[] {
  return Object.entries(status.web?.endpoints ?? {}).map(([name, url]) => ({ name, url }));
}

function link(url: string): HTMLElement {
  const a = document.createElement('a');
  a.className = 'rc-endpoint-url';
  a.textContent = url;
  a.href = url;
  a.target = '_blank';
  a.rel = 'noopener';
  return a;
}

export function endpointsTable(): SortableTable<IEndpoint> {
  return new SortableTable<IEndpoint>(
    'rc-endpoint',
    [
      { key: 'name', label: 'Endpoint', cell: e => bold(e.name), sort: e => e.name },
      { key: 'state', label: 'State', cell: () => badge('live'), sort: () => 0 },
      { key: 'url', label: 'URL', cell: e => link(e.url), sort: e => e.url }
    ],
    'no live web endpoints',
    (tr, e) => (tr.dataset.endpoint = e.name)
  );
}

export function sandboxesTable(): SortableTable<ISandbox> {
  return new SortableTable<ISandbox>(
    'rc-sandbox',
    [
      { key: 'id', label: 'Sandbox', cell: s => bold(s.id), sort: s => s.id },
      { key: 'state', label: 'State', cell: s => badge(s.status), sort: s => s.status },
      { key: 'what', label: 'Name or command', cell: s => s.name ?? s.cmd.join(' ') },
      { key: 'reason', label: 'Why', cell: s => s.reason ?? '' }
    ],
    'no sandboxes',
    (tr, s) => (tr.dataset.sandboxId = s.id)
  );
}

export function storeName(store: IStore): string {
  return store.name ?? `(ephemeral #${store.id})`;
}

export function storeSize(store: IStore): string {
  const unit = store.kind === 'dict' ? ['entry', 'entries'] : ['item', 'items'];
  return `${store.size} ${unit[store.size === 1 ? 0 : 1]}`;
}

export function storesTable(): SortableTable<IStore> {
  return new SortableTable<IStore>(
    'rc-store',
    [
      { key: 'kind', label: 'Kind', cell: s => (s.kind === 'dict' ? 'Dict' : 'Queue') },
      { key: 'name', label: 'Name', cell: s => bold(storeName(s)), sort: storeName },
      { key: 'size', label: 'Size', cell: storeSize, sort: s => s.size },
      { key: 'lifetime', label: 'Lifetime', cell: s => (s.ephemeral ? 'ephemeral' : 'named') }
    ],
    'no Dicts or Queues',
    (tr, s) => (tr.dataset.store = `${s.kind}:${storeName(s)}`)
  );
}
