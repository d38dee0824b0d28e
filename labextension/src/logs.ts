// A logs view that follows new lines like a terminal: at the bottom it stays there; scrolled up, it stays put.
import { ICall, requestAPI } from './api';
import { iconButton, sectionTitle } from './icons';

const BOTTOM_SLACK_PX = 4;

/** Whether ``node`` is scrolled to its end (within a few pixels). */
export function atBottom(node: HTMLElement): boolean {
  return node.scrollHeight - node.scrollTop - node.clientHeight <= BOTTOM_SLACK_PX;
}

/** Where the lines come from: a call's whole text, or a function's lines after the app's cursor. */
export type LogSource = { call: string } | { app: string; function: string; next: number };

/** The logs of one call or one function; ``poll`` fetches what is new and appends it. */
export class LogView {
  readonly node = document.createElement('section');
  readonly pre = document.createElement('pre');
  private readonly heading = sectionTitle('Logs');
  private readonly title = this.heading.querySelector('.rc-title') as HTMLElement;
  private readonly follow = iconButton('Follow', 'rc-follow', 'scroll to the newest lines and stay there');
  private source: LogSource | null = null;
  private following = true;

  constructor() {
    this.node.className = 'rc-section rc-logs-view';
    this.node.hidden = true;
    this.pre.className = 'rc-logs';
    this.follow.onclick = () => this.scrollToEnd();
    this.pre.onscroll = () => this.setFollowing(atBottom(this.pre));
    this.node.append(this.heading, this.follow, this.pre);
    this.setFollowing(true);
  }

  /** Show ``source``'s logs from the start. */
  async show(source: LogSource): Promise<void> {
    this.source = source;
    this.title.textContent = 'call' in source ? `Logs of ${source.call}` : `Logs of ${source.function}`;
    this.pre.textContent = '';
    this.node.hidden = false;
    this.setFollowing(true);
    await this.poll();
  }

  showCall(call: ICall): Promise<void> {
    return this.show({ call: call.id });
  }

  async poll(): Promise<void> {
    const source = this.source;
    if (source === null) {
      return;
    }
    try {
      if ('call' in source) {
        const reply = await requestAPI<{ text: string }>(`calls/${source.call}/logs`);
        this.setText(reply.text);
      } else {
        const path = `functions/${encodeURIComponent(source.app)}/${encodeURIComponent(source.function)}/logs`;
        const reply = await requestAPI<{ text: string; next: number }>(`${path}?after=${source.next}`);
        source.next = reply.next;
        this.append(reply.text);
      }
    } catch (err) {
      this.title.textContent = `Logs: ${err instanceof Error ? err.message : String(err)}`;
    }
  }

  /** The whole text: only what is new is appended, so the lines above (and the scroll) stay. */
  setText(text: string): void {
    const now = this.pre.textContent ?? '';
    if (text.startsWith(now)) {
      this.append(text.slice(now.length));
      return;
    }
    this.pre.textContent = '';
    this.append(text);
  }

  append(text: string): void {
    if (!text) {
      return;
    }
    const follow = this.following;
    this.pre.append(text);
    if (follow) {
      this.scrollToEnd();
    }
  }

  private scrollToEnd(): void {
    this.pre.scrollTop = this.pre.scrollHeight;
    this.setFollowing(true);
  }

  private setFollowing(following: boolean): void {
    this.following = following;
    this.node.dataset.following = String(following);
    this.follow.hidden = following; // the button is there only to come back
  }
}
