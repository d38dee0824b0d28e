// The remotecell server extension's REST API (/remotecell/api/), as the panel uses it.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IPool {
  function: string;
  fid: string;
  containers: Record<string, number>;
  queued: number;
  running: number;
  leased: number;
  waiting_reason: string;
  answered?: number; // inputs answered since the pool started (absent from older runtimes)
  container_states?: Record<string, string>;
  placements?: Record<string, string>;
  batching?: Record<string, { batches: number; items: number }>;
}

export interface IApp {
  app_id: string;
  name: string;
  mode: string;
  functions: string[];
}

export interface IGpu {
  index: number;
  name: string;
}

export interface ISandbox {
  id: string;
  status: string;
  name: string | null;
  cmd: string[];
  reason: string | null;
}

export interface IWeb {
  url: string;
  endpoints: Record<string, string>; // "APP/LABEL" -> its URL, for the live ones
}

export interface IStatus {
  runtime_id: string;
  pid: number;
  address: string | null;
  versions: Record<string, string>;
  gpus: IGpu[];
  gpus_free: number[];
  apps: IApp[];
  pools: IPool[];
  sessions: number;
  sandboxes?: ISandbox[];
  web?: IWeb;
}

export interface ICall {
  id: string;
  function: string;
  state: string;
  reason?: string;
  container?: string;
  attempts: number;
  created_at: number;
  finished_at?: number | null;
}

export interface IImage {
  key: string;
  description: string;
  layers: number;
  last_used: number;
  live: boolean;
}

export interface IStore {
  id: number;
  kind: 'dict' | 'queue';
  name: string | null;
  ephemeral: boolean;
  size: number;
}

export interface ISchedule {
  app: string;
  function: string;
  description: string;
  paused: boolean;
  next_at: number | null;
  last: { call_id: string; at: number; trigger: string; state: string } | null;
}

/** An answer other than 2xx: its status and the server's message (e.g. 503: no runtime is running). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

/** One request to the API; ServerConnection adds the token and the xsrf header. */
export async function requestAPI<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'remotecell', 'api', path);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) {
    throw new ApiError(response.status, (body && body.message) || response.statusText);
  }
  return body as T;
}
