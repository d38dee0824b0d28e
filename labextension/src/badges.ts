// State badges: a state's word in a pill colored by what it means (JupyterLab theme variables, see base.css).

/** What a state means to a user at a glance; each has its color in base.css (`.rc-badge-<kind>`). */
export type BadgeKind = 'active' | 'waiting' | 'ok' | 'failed' | 'paused' | 'idle';

const KIND_OF: Record<string, BadgeKind> = {
  running: 'active',
  busy: 'active',
  live: 'active',
  scheduled: 'active',
  deployed: 'active',
  ephemeral: 'ok',
  queued: 'waiting',
  pending: 'waiting',
  starting: 'waiting',
  retrying: 'waiting',
  succeeded: 'ok',
  idle: 'ok',
  failed: 'failed',
  crashed: 'failed',
  timeout: 'failed',
  error: 'failed',
  paused: 'paused',
  cancelled: 'idle',
  terminated: 'idle',
  stopping: 'idle',
  stopped: 'idle'
};

/** The kind of ``state``; an unknown state is neutral, one that says it failed is a failure. */
export function badgeKind(state: string): BadgeKind {
  return KIND_OF[state] ?? (state.includes('fail') ? 'failed' : 'idle');
}

/** ``<span class="rc-badge rc-badge-active" data-state="running">running</span>``, text only. */
export function badge(state: string): HTMLElement {
  const node = document.createElement('span');
  node.className = `rc-badge rc-badge-${badgeKind(state)}`;
  node.dataset.state = state;
  node.textContent = state;
  return node;
}
