// A short client-side history of the pools, one sample per status poll: what the live charts plot.
import { IPool } from './api';

export const METRICS = ['inputs/s', 'queue depth', 'containers', 'batch size'] as const;
export type Metric = (typeof METRICS)[number];
export const HISTORY_SAMPLES = 90; // 3 minutes at one poll every 2 s

/** The pool fields the history reads (``answered`` and ``batching`` are absent from older runtimes). */
export type IPoolSample = Pick<IPool, 'function' | 'containers' | 'queued'> & {
  answered?: number;
  batching?: Record<string, { batches: number; items: number }>;
};

type Series = Record<Metric, (number | null)[]>;

function batchTotals(pool: IPoolSample): [number, number] | null {
  const methods = Object.values(pool.batching ?? {});
  if (!methods.length) {
    return null;
  }
  return [methods.reduce((n, m) => n + m.batches, 0), methods.reduce((n, m) => n + m.items, 0)];
}

/**
 * Aligned series per function: ``data(metric)`` is uPlot's ``[times, f1 values, f2 values, ...]``.
 *
 * ```ts
 * history.add(Date.now() / 1000, status.pools);
 * chart.setData(history.data('inputs/s'));
 * ```
 */
export class History {
  readonly times: number[] = [];
  private readonly series = new Map<string, Series>();
  private readonly last = new Map<string, { t: number; answered?: number; batches?: [number, number] }>();

  constructor(readonly capacity = HISTORY_SAMPLES) {}

  /** The functions seen so far, in the order they first appeared (a chart's series never change places). */
  functions(): string[] {
    return [...this.series.keys()];
  }

  add(t: number, pools: IPoolSample[]): void {
    this.times.push(t);
    const seen = new Set<string>();
    for (const pool of pools) {
      seen.add(pool.function);
      this.push(this.seriesOf(pool.function), this.sample(t, pool));
    }
    for (const [name, series] of this.series) {
      if (!seen.has(name)) {
        this.push(series, { 'inputs/s': null, 'queue depth': null, containers: null, 'batch size': null });
      }
    }
    if (this.times.length > this.capacity) {
      this.times.shift();
      for (const series of this.series.values()) {
        METRICS.forEach(m => series[m].shift());
      }
    }
  }

  data(metric: Metric): [number[], ...(number | null)[][]] {
    return [this.times, ...[...this.series.values()].map(s => s[metric])];
  }

  private seriesOf(name: string): Series {
    let series = this.series.get(name);
    if (!series) {
      const gap = () => this.times.slice(0, -1).map(() => null as number | null);
      series = { 'inputs/s': gap(), 'queue depth': gap(), containers: gap(), 'batch size': gap() };
      this.series.set(name, series);
    }
    return series;
  }

  private push(series: Series, sample: Record<Metric, number | null>): void {
    METRICS.forEach(m => series[m].push(sample[m]));
  }

  /** One poll's values: rates from the counters' change since the last poll (none on the first, or a reset). */
  private sample(t: number, pool: IPoolSample): Record<Metric, number | null> {
    const before = this.last.get(pool.function);
    const batches = batchTotals(pool) ?? undefined;
    this.last.set(pool.function, { t, answered: pool.answered, batches });
    const dt = before ? t - before.t : 0;
    let rate: number | null = null;
    if (before?.answered !== undefined && pool.answered !== undefined && dt > 0 && pool.answered >= before.answered) {
      rate = (pool.answered - before.answered) / dt;
    }
    let batchSize: number | null = null;
    if (before?.batches && batches && batches[0] > before.batches[0]) {
      batchSize = (batches[1] - before.batches[1]) / (batches[0] - before.batches[0]);
    }
    const containers = Object.values(pool.containers).reduce((n, c) => n + c, 0);
    return { 'inputs/s': rate, 'queue depth': pool.queued, containers, 'batch size': batchSize };
  }
}
