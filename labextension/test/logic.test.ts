// The panel's pure logic: sorting, badges and the charts' history.
import { describe, expect, it } from 'vitest';

import { badge, badgeKind } from '../src/badges';
import { History } from '../src/history';
import { LogView } from '../src/logs';
import { IColumn, nextOrder, sortRows, SortableTable } from '../src/tables';

interface IRow {
  name: string;
  n: number;
}
const COLUMNS: IColumn<IRow>[] = [
  { key: 'name', label: 'Name', cell: r => r.name },
  { key: 'n', label: 'N', cell: r => String(r.n), sort: r => r.n }
];
const ROWS: IRow[] = [
  { name: 'f10', n: 2 },
  { name: 'f9', n: 10 },
  { name: 'a', n: 2 }
];

describe('sorting', () => {
  it('sorts by a column, numbers as numbers and names naturally, stably', () => {
    expect(sortRows(ROWS, COLUMNS, { key: 'n', ascending: true }).map(r => r.name)).toEqual(['f10', 'a', 'f9']);
    expect(sortRows(ROWS, COLUMNS, { key: 'n', ascending: false }).map(r => r.name)).toEqual(['f9', 'f10', 'a']);
    expect(sortRows(ROWS, COLUMNS, { key: 'name', ascending: true }).map(r => r.name)).toEqual(['a', 'f9', 'f10']);
    expect(sortRows(ROWS, COLUMNS, null)).toBe(ROWS);
  });

  it('a second click reverses, another column starts ascending', () => {
    expect(nextOrder(null, 'n')).toEqual({ key: 'n', ascending: true });
    expect(nextOrder({ key: 'n', ascending: true }, 'n')).toEqual({ key: 'n', ascending: false });
    expect(nextOrder({ key: 'n', ascending: false }, 'name')).toEqual({ key: 'name', ascending: true });
  });

  it('keeps the order the user chose across updates', () => {
    const table = new SortableTable<IRow>('rc-test', COLUMNS, 'nothing');
    table.update(ROWS);
    table.node.querySelector<HTMLElement>('th.rc-col-n')!.click();
    table.node.querySelector<HTMLElement>('th.rc-col-n')!.click();
    table.update([...ROWS, { name: 'b', n: 50 }]);
    const names = [...table.node.querySelectorAll('tbody .rc-col-name')].map(td => td.textContent);
    expect(names).toEqual(['b', 'f9', 'f10', 'a']);
    expect(table.node.querySelector('th.rc-col-n')!.getAttribute('aria-sort')).toBe('descending');
    table.update([]);
    expect(table.node.querySelector('tbody')!.textContent).toBe('nothing');
  });
});

describe('badges', () => {
  it('colors a state by what it means', () => {
    expect(badgeKind('running')).toBe('active');
    expect(badgeKind('queued')).toBe('waiting');
    expect(badgeKind('failed')).toBe('failed');
    expect(badgeKind('init_failed')).toBe('failed');
    expect(badgeKind('paused')).toBe('paused');
    expect(badgeKind('something new')).toBe('idle');
    const node = badge('<b>x</b>');
    expect(node.textContent).toBe('<b>x</b>'); // text, never HTML
    expect(node.className).toBe('rc-badge rc-badge-idle');
  });
});

describe('History', () => {
  const pool = (answered: number, queued = 0) => ({
    function: 'f',
    containers: { idle: 1, busy: 2 },
    queued,
    answered
  });

  it('turns the answered counter into inputs/s and keeps the other values as they are', () => {
    const history = new History();
    history.add(100, [pool(0, 5)]);
    history.add(102, [pool(10, 3)]);
    expect(history.data('inputs/s')).toEqual([
      [100, 102],
      [null, 5]
    ]);
    expect(history.data('queue depth')[1]).toEqual([5, 3]);
    expect(history.data('containers')[1]).toEqual([3, 3]);
  });

  it('aligns a function that appears later and one that goes away, and keeps only the last samples', () => {
    const history = new History(3);
    history.add(1, [pool(0)]);
    history.add(2, [pool(1), { ...pool(0), function: 'g' }]);
    history.add(3, []);
    history.add(4, [pool(2)]);
    expect(history.functions()).toEqual(['f', 'g']);
    expect(history.data('queue depth')).toEqual([
      [2, 3, 4],
      [0, null, 0],
      [0, null, null]
    ]);
  });

  it("plots a batched function's mean batch size since the last poll", () => {
    const history = new History();
    const batched = (batches: number, items: number) => ({ ...pool(0), batching: { __call__: { batches, items } } });
    history.add(1, [batched(1, 4)]);
    history.add(2, [batched(3, 20)]);
    history.add(3, [batched(3, 20)]);
    expect(history.data('batch size')[1]).toEqual([null, 8, null]);
  });
});

describe('LogView', () => {
  // jsdom has no layout: the pre's sizes are set by hand, as a browser would measure them.
  function sized(view: LogView, scrollHeight: number): void {
    Object.defineProperty(view.pre, 'scrollHeight', { configurable: true, value: scrollHeight });
    Object.defineProperty(view.pre, 'clientHeight', { configurable: true, value: 100 });
  }

  it('follows new lines at the bottom and stays put once scrolled up', () => {
    const view = new LogView();
    sized(view, 300);
    view.setText('a\nb\n');
    expect(view.pre.scrollTop).toBe(300); // followed to the end
    view.pre.scrollTop = 50; // the user scrolls up
    view.pre.dispatchEvent(new Event('scroll'));
    expect(view.node.dataset.following).toBe('false');
    sized(view, 400);
    view.setText('a\nb\nc\n');
    expect(view.pre.textContent).toBe('a\nb\nc\n');
    expect(view.pre.scrollTop).toBe(50); // kept
    view.node.querySelector<HTMLButtonElement>('.rc-follow')!.click();
    expect(view.pre.scrollTop).toBe(400);
    expect(view.node.dataset.following).toBe('true');
  });
});
