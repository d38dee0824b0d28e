// The panel's rows and a whole refresh against a stubbed API: what a user reads, and what a click sends.
import { afterEach, describe, expect, it, vi } from 'vitest';

const requestAPI = vi.fn();

vi.mock('../src/api', async importOriginal => ({
  ...(await importOriginal<typeof import('../src/api')>()),
  requestAPI: (...args: unknown[]) => requestAPI(...args)
}));

// uPlot draws on a canvas, which jsdom lacks: a stand-in records what the charts are given.
const plots: { data: unknown[][]; series: number }[] = [];
vi.mock('uplot', () => ({
  default: class {
    width = 240;
    record = { data: [] as unknown[][], series: 1 };
    constructor() {
      plots.push(this.record);
    }
    addSeries() {
      this.record.series += 1;
    }
    setData(data: unknown[][]) {
      this.record.data = data;
    }
    setSize() {}
  }
}));

import { ApiError, ICall, IStatus } from '../src/api';
import { containers, elapsed, el, RemotecellPanel, sandboxRow, storeRow } from '../src/panel';

const STATUS: IStatus = {
  runtime_id: 'rt-1',
  pid: 42,
  address: 'tcp://127.0.0.1:5555',
  versions: {},
  gpus: [{ index: 0, name: 'H100' }],
  gpus_free: [0],
  apps: [{ app_id: 'ap-1', name: 'demo', mode: 'ephemeral', functions: ['square'] }],
  pools: [
    {
      function: 'square',
      fid: 'fu-1',
      containers: { idle: 1, busy: 2 },
      queued: 3,
      running: 2,
      leased: 0,
      waiting_reason: 'waiting for a GPU',
      container_states: { 'ct-2': 'busy', 'ct-1': 'idle' },
      placements: { 'ct-2': 'pid 2', 'ct-1': 'pid 1' }
    }
  ],
  sessions: 1
};

const CALL: ICall = { id: 'fc-1', function: 'square', state: 'running', attempts: 1, created_at: 100 };

function stubAPI(calls: ICall[] = [CALL]): void {
  requestAPI.mockImplementation(async (path: string) => {
    if (path === 'status') {
      return STATUS;
    }
    if (path.startsWith('calls?')) {
      return { calls };
    }
    if (path === 'schedules') {
      return { schedules: [] };
    }
    if (path === 'stores') {
      return { stores: [{ id: 1, kind: 'dict', name: 'cache', ephemeral: false, size: 1 }] };
    }
    if (path === 'images') {
      return { images: [{ key: 'k1', description: 'debian_slim + numpy', layers: 2, last_used: 100, live: true }] };
    }
    if (path.endsWith('/logs')) {
      return { text: 'hello\n' };
    }
    return null;
  });
}

afterEach(() => requestAPI.mockReset());

describe('row text', () => {
  it('el puts text in as text, never as HTML', () => {
    const node = el('div', 'rc-row', '<b>not bold</b>');
    expect(node.textContent).toBe('<b>not bold</b>');
    expect(node.querySelector('b')).toBeNull();
  });

  it('counts containers per state', () => {
    expect(containers(STATUS.pools[0])).toBe('1 idle, 2 busy');
    expect(containers({ ...STATUS.pools[0], containers: {} })).toBe('no containers');
  });

  it('times a call until now, or until it finished', () => {
    expect(elapsed(CALL, 102.5)).toBe('2.5 s');
    expect(elapsed({ ...CALL, finished_at: 101 }, 500)).toBe('1.0 s');
    expect(elapsed({ ...CALL, created_at: 200 }, 100)).toBe('0.0 s'); // a clock behind the runtime's: never negative
  });

  it('says entry/entries and names an ephemeral store by id', () => {
    expect(storeRow({ id: 1, kind: 'dict', name: 'cache', ephemeral: false, size: 1 }).textContent).toBe(
      'Dict cache: 1 entry'
    );
    expect(storeRow({ id: 7, kind: 'queue', name: null, ephemeral: true, size: 3 }).textContent).toBe(
      'Queue (ephemeral #7): 3 items'
    );
  });

  it('shows a sandbox by name, else by its command, with why it stopped', () => {
    const row = sandboxRow({ id: 'sb-1', status: 'failed', name: null, cmd: ['sleep', '9'], reason: 'killed' });
    expect(row.textContent).toBe('sb-1 failed (killed): sleep 9');
    expect(row.dataset.sandboxId).toBe('sb-1');
  });
});

describe('RemotecellPanel', () => {
  it('renders every section from one refresh', async () => {
    stubAPI();
    const panel = new RemotecellPanel();
    await panel.refresh();
    const titles = [...panel.node.querySelectorAll('.rc-section > h3')].map(h => h.textContent);
    expect(titles).toEqual([
      'Live',
      'Runtime',
      'Apps',
      'Functions',
      'Containers',
      'Calls',
      'Inbox (last day)',
      'Schedules',
      'Web endpoints',
      'Sandboxes',
      'Dicts and Queues',
      'Images',
      '' // the logs view's, hidden until a call or function is picked
    ]);
    expect(panel.node.querySelector('.rc-image .rc-col-live')?.textContent).toBe('live');
    const ids = () => [...panel.node.querySelectorAll('.rc-container .rc-col-id')].map(td => td.textContent);
    expect(ids()).toEqual(['ct-2', 'ct-1']);
    panel.node.querySelector<HTMLElement>('.rc-container-table th.rc-col-id')!.click();
    await panel.refresh(); // the order the user chose stays
    expect(ids()).toEqual(['ct-1', 'ct-2']);
    expect(panel.node.querySelector('.rc-call-state')?.className).toBe('rc-badge rc-badge-active rc-call-state');
    expect(panel.node.querySelector('.rc-function')?.textContent).toBe(
      'square: 1 idle, 2 busy; 3 queued (waiting for a GPU), 2 runningLogs'
    );
    expect(panel.node.querySelector('.rc-call')?.getAttribute('data-call-id')).toBe('fc-1');
  });

  it('cancels a running call with one POST, and shows no Cancel for a finished one', async () => {
    stubAPI();
    const panel = new RemotecellPanel();
    await panel.refresh();
    const cancel = panel.node.querySelector<HTMLButtonElement>('.rc-call .rc-cancel');
    expect(cancel).not.toBeNull();
    cancel!.click();
    expect(cancel!.disabled).toBe(true);
    await vi.waitFor(() => expect(requestAPI).toHaveBeenCalledWith('calls/fc-1/cancel', { method: 'POST' }));

    stubAPI([{ ...CALL, state: 'succeeded', finished_at: 101 }]);
    await panel.refresh();
    expect(panel.node.querySelector('.rc-call .rc-cancel')).toBeNull();
  });

  it("shows a call's logs when its row is clicked", async () => {
    stubAPI();
    const panel = new RemotecellPanel();
    await panel.refresh();
    panel.node.querySelector<HTMLElement>('.rc-call')!.click();
    const logs = panel.node.querySelector<HTMLElement>('.rc-logs')!;
    await vi.waitFor(() => expect(logs.textContent).toBe('hello\n'));
    expect(panel.node.querySelector<HTMLElement>('.rc-logs-view')!.hidden).toBe(false);
  });

  it('keeps one chart per metric and gives it one more sample each poll', async () => {
    stubAPI();
    plots.length = 0;
    const panel = new RemotecellPanel();
    await panel.refresh();
    await panel.refresh();
    expect(plots).toHaveLength(4); // made once: the second poll set their data in place
    expect(plots[1].data).toEqual([expect.any(Array), [3, 3]]); // the queue depth of square, twice
    expect(plots[1].series).toBe(2);
    expect(panel.node.querySelector('.rc-chart')?.getAttribute('data-points')).toBe('2');
  });

  it("shows the API's error instead of the sections", async () => {
    requestAPI.mockRejectedValue(new ApiError(503, 'no runtime is running'));
    const panel = new RemotecellPanel();
    await panel.refresh();
    expect(panel.node.querySelector('.rc-error')?.textContent).toBe('no runtime is running');
  });
});
