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

/** A section's title: its icon, then its text (in a span, so tests and users read the text alone). */
export function sectionTitle(title: string): HTMLElement {
  const h3 = document.createElement('h3');
  const icon = SECTION_ICONS[title];
  if (icon) {
    h3.append(iconNode(icon));
  }
  const text = document.createElement('span');
  text.className = 'rc-title';
  text.textContent = title;
  h3.append(text);
  return h3;
}

/** A JupyterLab-styled button with its icon and its label; ``title`` is its tooltip. */
export function iconButton(label: string, className: string, title = ''): HTMLButtonElement {
  const button = document.createElement('button');
  button.className = `rc-action jp-Button ${className}`.trim();
  const icon = BUTTON_ICONS[label];
  if (icon) {
    button.append(iconNode(icon));
  }
  const text = document.createElement('span');
  text.className = 'rc-label';
  text.textContent = label;
  button.append(text);
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
