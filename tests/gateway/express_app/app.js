// An Express API the gateway tests put bastion in front of. It counts how often
// each handler ran, so a test can tell from the outside whether a request reached it.
'use strict';

const express = require('express');

const app = express();
const calls = new Map();

function count(name) {
  calls.set(name, (calls.get(name) || 0) + 1);
  return calls.get(name);
}

app.use(express.json());

app.post('/orders', (req, res) => {
  const key = req.get('Idempotency-Key') || '-';
  const n = count('orders:' + key);
  // Long enough for concurrent duplicates to overlap.
  setTimeout(() => res.status(201).json({ order: n, item: req.body.item }), 200);
});

app.get('/count', (req, res) => {
  res.json({ count: calls.get(req.query.name) || 0 });
});

app.get('/limited', (req, res) => {
  count('limited');
  res.json({ ok: true });
});

app.get('/echo/*', (req, res) => {
  res.json({ method: req.method, path: req.path, headers: req.headers });
});

app.get('/boom', () => {
  // Express's default handler answers with an HTML page holding this stack trace.
  throw new Error('database password hunter2 rejected (secret-token-123)');
});

app.get('/slow', (req, res) => {
  setTimeout(() => res.send('finally'), Number(req.query.ms || 2000));
});

app.get('/events', (req, res) => {
  res.set({ 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
  res.flushHeaders();
  res.write('event: first\ndata: one\n\n');
  const timer = setTimeout(() => {
    res.write('event: second\ndata: two\n\n');
    res.end();
  }, Number(req.query.ms || 1500));
  req.on('close', () => clearTimeout(timer));
});

const port = Number(process.env.PORT || 3000);
const server = app.listen(port, '127.0.0.1', () => {
  console.log(`express upstream on http://127.0.0.1:${port}`);
});
// Longer than the gateway's pool keep-alive (4s in the tests), so the gateway closes first.
server.keepAliveTimeout = 10000;
