// The side panel: what the runtime is doing, polled from the REST API while the panel is visible.
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { ApiError, ICall, IImage, IPool, ISandbox, ISchedule, IStatus, IStore, requestAPI } from './api';
import { badge } from './badges';
import { LiveChart } from './charts';
import { History, METRICS } from './history';
import { INBOX_PATH, inboxRow } from './inbox';
import { LogView } from './logs';
import { SortableTable } from './tables';

export const POLL_INTERVAL_MS = 2000;
const ACTIVE_STATES = new Set(['queued', 'running']);

/** A small DOM builder: text always goes in as text, never as HTML (names come from user code). */
export function el(tag: string, className: string, ...children: (Node | string)[]): HTMLElement {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  for (const child of children) {
    node.append(child);
  }
  return node;
}

function section(title: string, rows: HTMLElement[], empty: string): HTMLElement {
  const body = rows.length ? rows : [el('div', 'rc-empty', empty)];
  return el('section', 'rc-section', el('h3', '', title), ...body);
}

export function containers(pool: IPool): string {
  const parts = Object.entries(pool.containers).map(([state, n]) => `${n} ${state}`);
  return parts.join(', ') || 'no containers';
}

export function elapsed(call: ICall, nowS: number): string {
  const endS = call.finished_at || nowS;
  return `${Math.max(0, endS - call.created_at).toFixed(1)} s`;
}

export class RemotecellPanel extends Widget {
  private timer: number | null = null;
  private readonly content = el('div', 'rc-content');
  private readonly logs = new LogView();
  private readonly history = new History();
  private readonly charts = METRICS.map(metric => new LiveChart(metric));
  // Made once: the charts are updated in place, never rebuilt (no flicker), the tables keep their order.
  private readonly chartSection = el('section', 'rc-section rc-charts', el('h3', '', 'Live'));
  private readonly images = new SortableTable<IImage>(
    'rc-image',
    [
      { key: 'description', label: 'Image', cell: i => i.description || i.key },
      { key: 'layers', label: 'Layers', cell: i => String(i.layers), sort: i => i.layers },
      {
        key: 'used',
        label: 'Last used',
        cell: i => new Date(i.last_used * 1000).toLocaleString(),
        sort: i => i.last_used
      },
      { key: 'live', label: 'State', cell: i => badge(i.live ? 'live' : 'unused') }
    ],
    'no images built yet'
  );

  private readonly containerTable = new SortableTable<IContainerRow>(
    'rc-container',
    [
      { key: 'id', label: 'Container', cell: c => c.id },
      { key: 'function', label: 'Function', cell: c => c.function },
      { key: 'state', label: 'State', cell: c => badge(c.state), sort: c => c.state },
      { key: 'placement', label: 'Where', cell: c => c.placement }
    ],
    'no containers',
    (tr, c) => (tr.dataset.container = c.id)
  );

  constructor() {
    super();
    this.id = 'remotecell-panel';
    this.addClass('rc-panel');
    this.title.caption = 'remotecell';
    this.chartSection.append(...this.charts.map(c => c.node));
    this.node.append(el('h2', '', 'remotecell'), this.chartSection, this.content, this.logs.node);
  }

  /** Fetch everything once and redraw (also what each poll does). */
  async refresh(): Promise<void> {
    try {
      const [status, calls, schedules, stores, inbox, images] = await Promise.all([
        requestAPI<IStatus>('status'),
        requestAPI<{ calls: ICall[] }>('calls?limit=50'),
        requestAPI<{ schedules: ISchedule[] }>('schedules'),
        requestAPI<{ stores: IStore[] }>('stores'),
        requestAPI<{ calls: ICall[] }>(INBOX_PATH),
        requestAPI<{ images: IImage[] }>('images')
      ]);
      this.history.add(Date.now() / 1000, status.pools);
      this.charts.forEach(chart => chart.update(this.history));
      this.images.update(images.images);
      this.containerTable.update(containerRows(status.pools));
      this.render(status, calls.calls, schedules.schedules, stores.stores, inbox.calls);
      await this.logs.poll();
    } catch (err) {
      this.showError(err);
    }
  }

  protected onAfterShow(msg: Message): void {
    this.startPolling();
  }

  protected onAfterAttach(msg: Message): void {
    if (this.isVisible) {
      this.startPolling();
    }
  }

  protected onBeforeHide(msg: Message): void {
    this.stopPolling();
  }

  protected onBeforeDetach(msg: Message): void {
    this.stopPolling();
  }

  private startPolling(): void {
    if (this.timer !== null) {
      return;
    }
    void this.refresh();
    this.timer = window.setInterval(() => void this.refresh(), POLL_INTERVAL_MS);
  }

  private stopPolling(): void {
    if (this.timer !== null) {
      window.clearInterval(this.timer);
      this.timer = null;
    }
  }

  private showError(err: unknown): void {
    const message = err instanceof ApiError || err instanceof Error ? err.message : String(err);
    this.content.replaceChildren(el('div', 'rc-error', message));
  }

  private render(status: IStatus, calls: ICall[], schedules: ISchedule[], stores: IStore[], inbox: ICall[]): void {
    const gpus = status.gpus.map(g => g.name).join(', ') || 'none';
    const runtime = [
      el('div', 'rc-row', `${status.runtime_id} (pid ${status.pid}) on ${status.address ?? ''}`),
      el('div', 'rc-row', `GPUs: ${gpus}; free: [${status.gpus_free.join(', ')}]`),
      el('div', 'rc-row', `client sessions: ${status.sessions}`)
    ];
    const apps = status.apps.map(a =>
      el('div', 'rc-row rc-app', `${a.name} (${a.mode}): ${a.functions.join(', ') || 'no functions'}`)
    );
    const appOf = new Map(status.apps.flatMap(a => a.functions.map(f => [f, a.name] as [string, string])));
    const pools = status.pools.map(p => {
      const waiting = p.waiting_reason ? ` (${p.waiting_reason})` : '';
      const row = el(
        'div',
        'rc-row rc-function',
        el('b', '', p.function),
        `: ${containers(p)}; ${p.queued} queued${waiting}, ${p.running} running`
      );
      row.dataset.function = p.function;
      const app = appOf.get(p.function);
      if (app !== undefined) {
        const button = el('button', 'rc-action rc-function-logs jp-Button', 'Logs') as HTMLButtonElement;
        button.onclick = () => void this.logs.show({ app, function: p.function, next: 0 });
        row.append(button);
      }
      return row;
    });
    const nowS = Date.now() / 1000;
    this.content.replaceChildren(
      section('Runtime', runtime, ''),
      section('Apps', apps, 'no apps'),
      section('Functions', pools, 'no functions'),
      el('section', 'rc-section', el('h3', '', 'Containers'), this.containerTable.node),
      section(
        'Calls',
        calls.map(c => this.callRow(c, nowS)),
        'no spawned calls'
      ),
      section(
        'Inbox (last day)',
        inbox.map(c => inboxRow(c, nowS)),
        'no calls in the last day'
      ),
      section(
        'Schedules',
        schedules.map(c => this.scheduleRow(c)),
        'no schedules'
      ),
      section('Web endpoints', endpointRows(status), 'no live web endpoints'),
      section('Sandboxes', (status.sandboxes ?? []).map(sandboxRow), 'no sandboxes'),
      section('Dicts and Queues', stores.map(storeRow), 'no Dicts or Queues'),
      el('section', 'rc-section', el('h3', '', 'Images'), this.images.node)
    );
  }

  private callRow(call: ICall, nowS: number): HTMLElement {
    const detail = call.reason ? ` (${call.reason})` : '';
    const row = el(
      'div',
      `rc-row rc-call rc-state-${call.state}`,
      el('span', 'rc-call-function', call.function),
      ' ',
      callState(call.state),
      `${detail} ${elapsed(call, nowS)} `,
      el('span', 'rc-call-id', call.id)
    );
    row.dataset.callId = call.id;
    row.title = 'show its logs';
    row.onclick = () => void this.logs.showCall(call);
    if (ACTIVE_STATES.has(call.state)) {
      const button = this.actionButton('Cancel', `calls/${call.id}/cancel`);
      button.classList.add('rc-cancel');
      row.append(button);
    }
    return row;
  }

  private scheduleRow(schedule: ISchedule): HTMLElement {
    const next = schedule.paused
      ? 'paused'
      : `next ${schedule.next_at ? new Date(schedule.next_at * 1000).toLocaleString() : 'not planned'}`;
    const last = schedule.last ? `; last run ${schedule.last.state} (${schedule.last.trigger})` : '';
    const row = el(
      'div',
      'rc-row rc-schedule',
      el('b', '', schedule.function),
      ` (${schedule.app}): ${schedule.description}; `,
      el('span', 'rc-schedule-state', next),
      last
    );
    row.dataset.schedule = `${schedule.app}/${schedule.function}`;
    const path = `schedules/${encodeURIComponent(schedule.app)}/${encodeURIComponent(schedule.function)}`;
    const [label, action] = schedule.paused ? ['Resume', 'resume'] : ['Pause', 'pause'];
    row.append(this.actionButton(label, `${path}/${action}`), this.actionButton('Run now', `${path}/run`));
    return row;
  }

  /** A button that POSTs to ``path`` once, then redraws the panel. */
  private actionButton(label: string, path: string): HTMLButtonElement {
    const button = el('button', 'rc-action jp-Button', label) as HTMLButtonElement;
    button.onclick = event => {
      event.stopPropagation(); // a click on a button is not a click on its row
      button.disabled = true;
      void this.post(path);
    };
    return button;
  }

  private async post(path: string): Promise<void> {
    try {
      await requestAPI(path, { method: 'POST' });
    } catch (err) {
      this.showError(err);
    }
    await this.refresh();
  }
}

interface IContainerRow {
  id: string;
  function: string;
  state: string;
  placement: string;
}

/** Every pool's containers, one row each (from the pools' ``container_states`` and ``placements``). */
export function containerRows(pools: IPool[]): IContainerRow[] {
  return pools.flatMap(p =>
    Object.entries(p.container_states ?? {}).map(([id, state]) => ({
      id,
      function: p.function,
      state,
      placement: p.placements?.[id] ?? ''
    }))
  );
}

function callState(state: string): HTMLElement {
  const node = badge(state);
  node.classList.add('rc-call-state');
  return node;
}

export function storeRow(store: IStore): HTMLElement {
  const kind = store.kind === 'dict' ? 'Dict' : 'Queue';
  const name = store.name ?? `(ephemeral #${store.id})`;
  const unit = store.kind === 'dict' ? ['entry', 'entries'] : ['item', 'items'];
  return el('div', 'rc-row rc-store', `${kind} ${name}: ${store.size} ${unit[store.size === 1 ? 0 : 1]}`);
}

export function endpointRows(status: IStatus): HTMLElement[] {
  return Object.entries(status.web?.endpoints ?? {}).map(([name, url]) => {
    const link = el('a', 'rc-endpoint-url', url) as HTMLAnchorElement;
    link.href = url;
    link.target = '_blank';
    link.rel = 'noopener';
    const row = el('div', 'rc-row rc-endpoint', el('b', '', name), ' => ', link);
    row.dataset.endpoint = name;
    return row;
  });
}

export function sandboxRow(sandbox: ISandbox): HTMLElement {
  const what = sandbox.name ?? sandbox.cmd.join(' ');
  const reason = sandbox.reason ? ` (${sandbox.reason})` : '';
  const row = el('div', 'rc-row rc-sandbox', el('b', '', sandbox.id), ` ${sandbox.status}${reason}: ${what}`);
  row.dataset.sandboxId = sandbox.id;
  return row;
}
