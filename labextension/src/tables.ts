// Sortable tables: click a header to sort by it (again: the other way); the order stays across refreshes.

/** One column: its header, its cell, and the value it sorts by (the cell's text when not given). */
export interface IColumn<T> {
  key: string; // the cells' class: rc-col-<key>
  label: string;
  cell: (row: T) => Node | string;
  sort?: (row: T) => number | string;
}

export interface ISortOrder {
  key: string;
  ascending: boolean;
}

function sortValue<T>(column: IColumn<T>, row: T): number | string {
  if (column.sort) {
    return column.sort(row);
  }
  const cell = column.cell(row);
  return typeof cell === 'string' ? cell : (cell.textContent ?? '');
}

function compare(a: number | string, b: number | string): number {
  if (typeof a === 'number' && typeof b === 'number') {
    return a - b;
  }
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

/** ``rows`` in ``order`` (a stable sort: equal rows keep the API's order); unsorted when ``order`` is null. */
export function sortRows<T>(rows: T[], columns: IColumn<T>[], order: ISortOrder | null): T[] {
  const column = order && columns.find(c => c.key === order.key);
  if (!order || !column) {
    return rows;
  }
  const sign = order.ascending ? 1 : -1;
  return rows
    .map((row, index) => ({ row, index, value: sortValue(column, row) }))
    .sort((a, b) => sign * compare(a.value, b.value) || a.index - b.index)
    .map(item => item.row);
}

/** The order after a click on ``key``: ascending first, then descending. */
export function nextOrder(order: ISortOrder | null, key: string): ISortOrder {
  return order && order.key === key ? { key, ascending: !order.ascending } : { key, ascending: true };
}

/**
 * A table redrawn on each ``update`` in the order the user chose; the table and its headers stay.
 *
 * ```ts
 * const table = new SortableTable('rc-store', [{ key: 'name', label: 'Name', cell: s => s.name }], 'none');
 * table.update(stores); // later polls: table.update(newer)
 * ```
 */
export class SortableTable<T> {
  readonly node = document.createElement('table');
  private readonly body = document.createElement('tbody');
  private order: ISortOrder | null = null;
  private rows: T[] = [];

  constructor(
    private readonly rowClass: string,
    private readonly columns: IColumn<T>[],
    private readonly empty: string,
    private readonly decorate: (tr: HTMLTableRowElement, row: T) => void = () => undefined
  ) {
    this.node.className = `rc-table ${rowClass}-table`;
    const head = document.createElement('tr');
    for (const column of columns) {
      const th = document.createElement('th');
      th.className = `rc-col-${column.key}`;
      th.textContent = column.label;
      th.setAttribute('aria-sort', 'none');
      th.onclick = () => this.sortBy(column.key);
      head.append(th);
    }
    this.node.createTHead().append(head);
    this.node.append(this.body);
  }

  update(rows: T[]): void {
    this.rows = rows;
    this.draw();
  }

  sortBy(key: string): void {
    this.order = nextOrder(this.order, key);
    for (const th of Array.from(this.node.querySelectorAll('th'))) {
      const mine = th.classList.contains(`rc-col-${key}`);
      th.setAttribute('aria-sort', mine ? (this.order.ascending ? 'ascending' : 'descending') : 'none');
    }
    this.draw();
  }

  private draw(): void {
    if (!this.rows.length) {
      const td = document.createElement('td');
      td.className = 'rc-empty';
      td.colSpan = this.columns.length;
      td.textContent = this.empty;
      const tr = document.createElement('tr');
      tr.append(td);
      this.body.replaceChildren(tr);
      return;
    }
    this.body.replaceChildren(...sortRows(this.rows, this.columns, this.order).map(row => this.tr(row)));
  }

  private tr(row: T): HTMLTableRowElement {
    const tr = document.createElement('tr');
    tr.className = `rc-row ${this.rowClass}`;
    for (const column of this.columns) {
      const td = document.createElement('td');
      td.className = `rc-col-${column.key}`;
      td.append(column.cell(row));
      tr.append(td);
    }
    this.decorate(tr, row);
    return tr;
  }
}
