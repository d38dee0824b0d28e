// The side panel: what the runtime is doing, polled from the REST API while the panel is visible.
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { ApiError, ICall, IImage, IPool, ISchedule, IStatus, IStore, requestAPI } from './api';
import { badge } from './badges';
import { LiveChart } from './charts';
import { History, METRICS } from './history';
import { sectionTitle } from './icons';
import {
  appsTable,
  callsTable,
  endpointRows,
  endpointsTable,
  functionRows,
  functionsTable,
  IActions,
  inboxTable,
  sandboxesTable,
  schedulesTable,
  storesTable
} from './lists';
import { LogSource, LogView } from './logs';
import { SortableTable } from './tables';

export const POLL_INTERVAL_MS = 2000;
export const INBOX_PATH = 'calls?limit=100&since_s=86400'; // what the Inbox lists: the last day's calls

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

function section(title: string, ...body: Node[]): HTMLElement {
  return el('section', 'rc-section', sectionTitle(title), ...body);
}

function imagesTable(): SortableTable<IImage> {
  return new SortableTable<IImage>(
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
}

function containerTable(): SortableTable<IContainerRow> {
  return new SortableTable<IContainerRow>(
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
}

/** One poll's answers: everything the sections show. */
interface IAnswers {
  status: IStatus;
  calls: ICall[];
  schedules: ISchedule[];
  stores: IStore[];
  inbox: ICall[];
  images: IImage[];
}

async function fetchAll(): Promise<IAnswers> {
  const [status, calls, schedules, stores, inbox, images] = await Promise.all([
    requestAPI<IStatus>('status'),
    requestAPI<{ calls: ICall[] }>('calls?limit=50'),
    requestAPI<{ schedules: ISchedule[] }>('schedules'),
    requestAPI<{ stores: IStore[] }>('stores'),
    requestAPI<{ calls: ICall[] }>(INBOX_PATH),
    requestAPI<{ images: IImage[] }>('images')
  ]);
  return {
    status,
    calls: calls.calls,
    schedules: schedules.schedules,
    stores: stores.stores,
    inbox: inbox.calls,
    images: images.images
  };
}

/**
 * The panel: made once; each poll feeds its tables and charts in place (no flicker, the tables keep their order).
 * ``node.dataset.polls`` counts the polls drawn (tests wait on it).
 */
export class RemotecellPanel extends Widget {
  private timer: number | null = null;
  private polls = 0;
  private readonly content = el('div', 'rc-content');
  private readonly logs = new LogView();
  private readonly history = new History();
  private readonly charts = METRICS.map(metric => new LiveChart(metric));
  private readonly runtime = el('div', 'rc-runtime');
  private readonly actions: IActions = {
    post: path => this.post(path),
    showLogs: (source: LogSource) => this.logs.show(source)
  };
  private readonly now = () => Date.now() / 1000;
  private readonly tables = {
    apps: appsTable(),
    functions: functionsTable(this.actions),
    containers: containerTable(),
    calls: callsTable(this.actions, this.now),
    inbox: inboxTable(this.now),
    schedules: schedulesTable(this.actions),
    endpoints: endpointsTable(),
    sandboxes: sandboxesTable(),
    stores: storesTable(),
    images: imagesTable()
  };
  private readonly sections: HTMLElement[] = [
    section('Runtime', this.runtime),
    section('Apps', this.tables.apps.node),
    section('Functions', this.tables.functions.node),
    section('Containers', this.tables.containers.node),
    section('Calls', this.tables.calls.node),
    section('Inbox (last day)', this.tables.inbox.node),
    section('Schedules', this.tables.schedules.node),
    section('Web endpoints', this.tables.endpoints.node),
    section('Sandboxes', this.tables.sandboxes.node),
    section('Dicts and Queues', this.tables.stores.node),
    section('Images', this.tables.images.node)
  ];

  constructor() {
    super();
    this.id = 'remotecell-panel';
    this.addClass('rc-panel');
    this.title.caption = 'remotecell';
    const charts = section('Live', ...this.charts.map(c => c.node));
    charts.classList.add('rc-charts');
    this.node.append(el('h2', '', 'remotecell'), charts, this.content, this.logs.node);
  }

  /** Fetch everything once and redraw (also what each poll does). */
  async refresh(): Promise<void> {
    try {
      const answers = await fetchAll();
      this.history.add(Date.now() / 1000, answers.status.pools);
      this.charts.forEach(chart => chart.update(this.history));
      this.draw(answers);
      await this.logs.poll();
    } catch (err) {
      this.showError(err);
    }
    this.polls += 1;
    this.node.dataset.polls = String(this.polls);
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

  private draw(a: IAnswers): void {
    const { status } = a;
    const gpus = status.gpus.map(g => g.name).join(', ') || 'none';
    this.runtime.replaceChildren(
      el('div', 'rc-row', `${status.runtime_id} (pid ${status.pid}) on ${status.address ?? ''}`),
      el('div', 'rc-row', `GPUs: ${gpus}; free: [${status.gpus_free.join(', ')}]`),
      el('div', 'rc-row', `client sessions: ${status.sessions}`)
    );
    this.tables.apps.update(status.apps);
    this.tables.functions.update(functionRows(status));
    this.tables.containers.update(containerRows(status.pools));
    this.tables.calls.update(a.calls);
    this.tables.inbox.update(a.inbox);
    this.tables.schedules.update(a.schedules);
    this.tables.endpoints.update(endpointRows(status));
    this.tables.sandboxes.update(status.sandboxes ?? []);
    this.tables.stores.update(a.stores);
    this.tables.images.update(a.images);
    if (this.content.firstChild !== this.sections[0]) {
      this.content.replaceChildren(...this.sections); // once, or again after an error replaced them
    }
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
