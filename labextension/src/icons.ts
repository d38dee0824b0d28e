// JupyterLab's own icons (LabIcon) on the panel's section titles and buttons: they take the theme's colors.
import {
  bellIcon,
  buildIcon,
  codeIcon,
  copyIcon,
  caretDownIcon,
  fastForwardIcon,
  historyIcon,
  kernelIcon,
  LabIcon,
  launcherIcon,
  linkIcon,
  listIcon,
  offlineBoltIcon,
  pauseIcon,
  runIcon,
  runningIcon,
  stopIcon,
  tableRowsIcon,
  terminalIcon
} from '@jupyterlab/ui-components';

/** Each section's icon, by its title. */
export const SECTION_ICONS: Record<string, LabIcon> = {
  Live: offlineBoltIcon,
  Runtime: runningIcon,
  Apps: launcherIcon,
  Functions: codeIcon,
  Containers: kernelIcon,
  Calls: runIcon,
  'Inbox (last day)': bellIcon,
  Schedules: historyIcon,
  'Web endpoints': linkIcon,
  Sandboxes: terminalIcon,
  'Dicts and Queues': tableRowsIcon,
  Images: buildIcon,
  Logs: listIcon
};

/** Each button's icon, by its label. */
export const BUTTON_ICONS: Record<string, LabIcon> = {
  Cancel: stopIcon,
  Copy: copyIcon,
  Logs: listIcon,
  Pause: pauseIcon,
  Resume: runIcon,
  'Run now': fastForwardIcon,
  Follow: caretDownIcon
};

/** ``icon`` as a small inline element (``.rc-icon``, sized in base.css). */
export function iconNode(icon: LabIcon): HTMLElement {
  return icon.element({ tag: 'span', className: 'rc-icon' });
}

/** ``node`` with ``icon`` (when there is one) then ``text`` in a span of ``textClass`` (read alone by tests). */
function withIcon<T extends HTMLElement>(node: T, icon: LabIcon | undefined, text: string, textClass: string): T {
  if (icon) {
    node.append(iconNode(icon));
  }
  const span = document.createElement('span');
  span.className = textClass;
  span.textContent = text;
  node.append(span);
  return node;
}

/** A section's title: its icon, then its text. */
export function sectionTitle(title: string): HTMLElement {
  return withIcon(document.createElement('h3'), SECTION_ICONS[title], title, 'rc-title');
}

/** A JupyterLab-styled button with its icon and its label; ``title`` is its tooltip. */
export function iconButton(label: string, className: string, title = ''): HTMLButtonElement {
  const button = withIcon(document.createElement('button'), BUTTON_ICONS[label], label, 'rc-label');
  button.className = `rc-action jp-Button ${className}`.trim();
  button.title = title;
  return button;
}

/** Change a button's label, keeping its icon (``Copy`` -> ``Copied``). */
export function setLabel(button: HTMLButtonElement, label: string): void {
  const text = button.querySelector('.rc-label');
  if (text) {
    text.textContent = label;
  } else {
    button.textContent = label;
  }
}
