// requestAPI: the URL it asks, the body it returns, and an ApiError with the server's message otherwise.
import { afterEach, describe, expect, it, vi } from 'vitest';

const makeRequest = vi.fn();

vi.mock('@jupyterlab/services', () => ({
  ServerConnection: {
    makeSettings: () => ({ baseUrl: 'http://127.0.0.1:8888/lab-base/' }),
    makeRequest: (...args: unknown[]) => makeRequest(...args)
  }
}));

import { ApiError, requestAPI } from '../src/api';

function answer(status: number, body: string, statusText = ''): Response {
  return new Response(body, { status, statusText });
}

afterEach(() => makeRequest.mockReset());

describe('requestAPI', () => {
  it('asks under the base URL and returns the parsed body', async () => {
    makeRequest.mockResolvedValue(answer(200, '{"calls": [{"id": "fc-1"}]}'));
    const reply = await requestAPI<{ calls: { id: string }[] }>('calls?limit=50');
    expect(reply.calls[0].id).toBe('fc-1');
    expect(makeRequest.mock.calls[0][0]).toBe('http://127.0.0.1:8888/lab-base/remotecell/api/calls?limit=50');
  });

  it('passes the method on (a POST for actions)', async () => {
    makeRequest.mockResolvedValue(answer(200, ''));
    expect(await requestAPI('calls/fc-1/cancel', { method: 'POST' })).toBeNull();
    expect(makeRequest.mock.calls[0][1]).toEqual({ method: 'POST' });
  });

  it("raises an ApiError with the status and the server's message", async () => {
    makeRequest.mockResolvedValue(answer(503, '{"message": "no runtime is running"}'));
    const error = await requestAPI('status').catch(err => err);
    expect(error).toBeInstanceOf(ApiError);
    expect(error.status).toBe(503);
    expect(error.message).toBe('no runtime is running');
  });

  it('falls back to the status text when the body has no message', async () => {
    makeRequest.mockResolvedValue(answer(404, '', 'Not Found'));
    await expect(requestAPI('calls/fc-9/logs')).rejects.toMatchObject({ status: 404, message: 'Not Found' });
  });
});
