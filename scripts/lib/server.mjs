// A static file server on 127.0.0.1 for the browser tests: HTTP Range requests (the model
// downloader's resume path), a log of every request (the privacy checks), and knobs to
// cut a download short or corrupt it.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json', '.css': 'text/css' };

/**
 * Serves `root`. `routes` maps URL paths to files outside it; `extraHeaders` go on every
 * response (cross-origin isolation for the browser benchmark). Knobs for tests:
 * `cut(bytes)` makes the server die mid-transfer once that many more body bytes have gone
 * out (connections dropped, later requests too) until `heal()`; `state.corrupt` flips a byte
 * in the middle of every body.
 */
export async function serve(root, routes = {}, extraHeaders = {}) {
  const state = { requests: [], served: 0, limit: Infinity, corrupt: false };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    state.requests.push({ method: req.method, path: url.pathname, range: req.headers.range ?? null });
    if (state.served >= state.limit) { req.socket.destroy(); return; }
    const file = routes[url.pathname] ?? path.join(root, decodeURIComponent(url.pathname));
    if (!path.resolve(file).startsWith(path.resolve(root)) && !Object.values(routes).includes(file)) {
      res.writeHead(403).end();
      return;
    }
    let stat;
    try { stat = fs.statSync(file); } catch { res.writeHead(404).end(); return; }
    if (!stat.isFile()) { res.writeHead(404).end(); return; }
    const headers = { 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'Accept-Ranges': 'bytes', 'Access-Control-Allow-Origin': '*', 'Access-Control-Expose-Headers': 'Content-Length, Content-Range, Accept-Ranges', ...extraHeaders };
    let start = 0, end = stat.size - 1, status = 200;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (m) {
      start = Number(m[1]);
      end = m[2] ? Math.min(Number(m[2]), stat.size - 1) : stat.size - 1;
      if (start >= stat.size) { res.writeHead(416, { 'Content-Range': `bytes */${stat.size}` }).end(); return; }
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${stat.size}`;
    }
    headers['Content-Length'] = end - start + 1;
    res.writeHead(status, headers);
    if (req.method === 'HEAD') { res.end(); return; }
    let sent = 0;
    const stream = fs.createReadStream(file, { start, end, highWaterMark: 1 << 20 });
    stream.on('data', (chunk) => {
      if (state.corrupt && sent === 0) { chunk = Buffer.from(chunk); chunk[chunk.length >> 1] ^= 0xff; }
      if (state.served + chunk.length > state.limit) {
        res.write(chunk.subarray(0, Math.max(0, state.limit - state.served)));
        state.served = state.limit;
        stream.destroy();
        res.socket.destroy();
        return;
      }
      sent += chunk.length;
      state.served += chunk.length;
      if (!res.write(chunk)) { stream.pause(); res.once('drain', () => stream.resume()); }
    });
    stream.on('end', () => res.end());
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const origin = `http://127.0.0.1:${server.address().port}`;
  return {
    origin, state,
    cut: (bytes) => { state.limit = state.served + bytes; },
    heal: () => { state.limit = Infinity; },
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
}
