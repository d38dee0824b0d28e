// Live charts (uPlot): made once, then each poll sets their data in place, so nothing is redrawn as DOM.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

import { History, Metric } from './history';

const HEIGHT = 120;
// Series colors: the theme's own, read at each draw (so a theme switch recolors the next frame).
const COLORS = ['--jp-brand-color1', '--jp-warn-color1', '--jp-success-color1', '--jp-error-color1'];

function cssVar(node: HTMLElement, name: string): string {
  return getComputedStyle(node).getPropertyValue(name).trim() || '#888';
}

/** How many of ``data``'s values are plotted points (not gaps), over every series but the times. */
export function plotted(data: (number | null)[][]): number {
  return data.slice(1).reduce((n, series) => n + series.filter(v => v !== null).length, 0);
}

/**
 * One metric over time, one line per function; ``node.dataset.points`` is how many samples it holds,
 * ``node.dataset.values`` how many points it draws (a batch size only where batches came since the last poll).
 */
export class LiveChart {
  readonly node = document.createElement('div');
  private plot: uPlot | null = null;
  private shown = 0; // functions with a series on the plot

  constructor(readonly metric: Metric) {
    this.node.className = 'rc-chart';
    this.node.dataset.metric = metric;
  }

  update(history: History): void {
    const data = history.data(this.metric);
    this.node.dataset.points = String(data[0].length);
    this.node.dataset.values = String(plotted(data));
    const names = history.functions();
    if (this.plot === null) {
      this.plot = new uPlot(this.options(), data as uPlot.AlignedData, this.node);
      names.forEach(name => this.addSeries(name));
    } else {
      names.slice(this.shown).forEach(name => this.addSeries(name));
    }
    this.plot.setData(data as uPlot.AlignedData);
    const width = this.node.clientWidth;
    if (width > 0 && width !== this.plot.width) {
      this.plot.setSize({ width, height: HEIGHT });
    }
  }

  private addSeries(name: string): void {
    const color = COLORS[this.shown % COLORS.length];
    this.plot!.addSeries({
      label: name.slice(name.lastIndexOf('.') + 1),
      stroke: () => cssVar(this.node, color),
      width: 1.5,
      spanGaps: false
    });
    this.shown += 1;
  }

  private options(): uPlot.Options {
    const text = () => cssVar(this.node, '--jp-ui-font-color2');
    const grid = { stroke: () => cssVar(this.node, '--jp-border-color2'), width: 0.5 };
    return {
      title: this.metric,
      width: Math.max(this.node.clientWidth, 240),
      height: HEIGHT,
      series: [{}],
      axes: [
        { stroke: text, grid, ticks: grid },
        { stroke: text, grid, ticks: grid, size: 40 }
      ],
      legend: { show: true },
      cursor: { show: true }
    };
  }
}
