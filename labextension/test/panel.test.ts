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
import { plotted } from '../src/charts';
import { reattachSnippet } from '../src/clipboard';
import { containers, elapsed, functionState, humanDuration, storeName, storeSize } from '../src/lists';
import { el, RemotecellPanel } from '../src/panel';
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
    const cache = { id: 1, kind: 'dict', name: 'cache', ephemeral: false, size: 1 } as const;
    expect([storeName(cache), storeSize(cache)]).toEqual(['cache', '1 entry']);
    const queue = { id: 7, kind: 'queue', name: null, ephemeral: true, size: 3 } as const;
    expect([storeName(queue), storeSize(queue)]).toEqual(['(ephemeral #7)', '3 items']);
  });

  it('gives a function the state a user reads first: running, queued, idle or scaled to 0', () => {
    const pool = { running: 0, queued: 0, containers: {} };
    expect(functionState({ ...pool, running: 1, queued: 4 })).toBe('running');
    expect(functionState({ ...pool, queued: 4 })).toBe('queued');
    expect(functionState({ ...pool, containers: { idle: 1 } })).toBe('idle');
    expect(functionState({ ...pool, containers: { idle: 0 } })).toBe('scaled to 0');
  });

  it('reads durations as people do, and counts only drawn chart points', () => {
    expect([humanDuration(2.5), humanDuration(184), humanDuration(3720)]).toEqual(['2.5 s', '3 min 4 s', '1 h 2 min']);
    expect(
      plotted([
        [1, 2, 3],
        [null, 2, null],
        [1, null, 4]
      ])
    ).toBe(3);
  });

  it('reattaches to a call by its id', () => {
    expect(reattachSnippet(CALL).split('\n')[1]).toBe('call = rc.FunctionCall.from_id("fc-1")  # square');
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
      'Logs' // hidden until a call or function is picked
    ]);
    expect(panel.node.querySelectorAll('.rc-section > h3 svg')).toHaveLength(13); // each title its LabIcon
    expect(panel.node.querySelector('.rc-image .rc-col-live')?.textContent).toBe('live');
    const ids = () => [...panel.node.querySelectorAll('.rc-container .rc-col-id')].map(td => td.textContent);
    expect(ids()).toEqual(['ct-2', 'ct-1']);
    panel.node.querySelector<HTMLElement>('.rc-container-table th.rc-col-id')!.click();
    await panel.refresh(); // the order the user chose stays
    expect(ids()).toEqual(['ct-1', 'ct-2']);
    expect(panel.node.querySelector('.rc-call-state')?.className).toBe('rc-badge rc-badge-active rc-call-state');
    const cellsOf = (row: string) => [...panel.node.querySelectorAll(`${row} td`)].map(td => td.textContent);
    expect(cellsOf('.rc-function')).toEqual([
      'square',
      'demo',
      'running',
      '1 idle, 2 busy',
      '3',
      '2',
      'waiting for a GPU',
      'Logs'
    ]);
    expect(panel.node.querySelector('.rc-function .rc-badge')?.className).toBe('rc-badge rc-badge-active');
    expect(cellsOf('.rc-store')).toEqual(['Dict', 'cache', '1 entry', 'named']);
    expect(cellsOf('.rc-app')).toEqual(['demo', 'ephemeral', 'square', 'ap-1']);
    expect(panel.node.querySelector('.rc-call .rc-call-logs svg')).not.toBeNull(); // buttons have their icons
    expect(panel.node.querySelector('.rc-call .rc-copy')?.getAttribute('data-snippet')).toContain(
      'rc.FunctionCall.from_id("fc-1")'
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

  it('sorts the calls by a header click, and keeps that order on the next poll', async () => {
    const older = { ...CALL, id: 'fc-2', function: 'cube', created_at: 50 };
    stubAPI([CALL, older]);
    const panel = new RemotecellPanel();
    await panel.refresh();
    const names = () => [...panel.node.querySelectorAll('.rc-call .rc-col-function')].map(td => td.textContent);
    expect(names()).toEqual(['square', 'cube']);
    panel.node.querySelector<HTMLElement>('.rc-call-table th.rc-col-function')!.click();
    expect(names()).toEqual(['cube', 'square']);
    stubAPI([{ ...CALL, state: 'succeeded' }, older]);
    await panel.refresh();
    expect(names()).toEqual(['cube', 'square']);
    expect(panel.node.dataset.polls).toBe('2');
  });

  it('copies the snippet that reattaches to a call', async () => {
    stubAPI();
    const writeText = vi.fn(async () => undefined);
    Object.defineProperty(window, 'isSecureContext', { value: true, configurable: true });
    Object.defineProperty(navigator, 'clipboard', { value: { writeText }, configurable: true });
    const panel = new RemotecellPanel();
    await panel.refresh();
    const copy = panel.node.querySelector<HTMLButtonElement>('.rc-call .rc-copy')!;
    copy.click();
    await vi.waitFor(() => expect(copy.textContent).toBe('Copied'));
    expect(writeText).toHaveBeenCalledWith(reattachSnippet(CALL));
  });

  it("shows a call's logs from its Logs button", async () => {
    stubAPI();
    const panel = new RemotecellPanel();
    await panel.refresh();
    panel.node.querySelector<HTMLElement>('.rc-call .rc-call-logs')!.click();
    await vi.waitFor(() => expect(panel.node.querySelector('.rc-logs')?.textContent).toBe('hello\n'));
    expect(panel.node.querySelector('.rc-logs-view .rc-title')?.textContent).toBe('Logs of fc-1');
    expect(requestAPI).toHaveBeenCalledWith('calls/fc-1/logs');
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
