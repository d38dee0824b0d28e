// remotecell's JupyterLab extension: the side panel, in the left area, opened from its tab or the palette.
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { LabIcon } from '@jupyterlab/ui-components';

import { RemotecellPanel } from './panel';

const OPEN_COMMAND = 'remotecell:open-panel';

const icon = new LabIcon({
  name: 'remotecell:icon',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
    '<rect x="3" y="4" width="18" height="4" rx="1"/><rect x="3" y="10" width="18" height="4" rx="1"/>' +
    '<rect x="3" y="16" width="18" height="4" rx="1"/></g></svg>'
});

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'remotecell:panel',
  description: 'remotecell side panel: runtimes, apps, functions, calls, Dicts and Queues.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (app: JupyterFrontEnd, restorer: ILayoutRestorer | null, palette: ICommandPalette | null) => {
    const panel = new RemotecellPanel();
    panel.title.icon = icon;
    app.shell.add(panel, 'left', { rank: 1000 });
    if (restorer) {
      restorer.add(panel, panel.id); // reopens where the user left it
    }
    app.commands.addCommand(OPEN_COMMAND, {
      label: 'Show the remotecell panel',
      execute: () => app.shell.activateById(panel.id)
    });
    if (palette) {
      palette.addItem({ command: OPEN_COMMAND, category: 'remotecell' });
    }
  }
};

export default plugin;
