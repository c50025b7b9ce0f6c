// A small Express orders API with none of the four production pitfalls handled:
// no idempotency, HTML error pages with stack traces, no rate limits, no validation.
// `bastion gateway --config bastion.yaml` puts every guard in front of it.
'use strict';

const express = require('express');

const app = express();
app.use(express.json());

const orders = new Map();
let charges = 0;

app.get('/health', (req, res) => res.json({ status: 'ok' }));

app.get('/orders', (req, res) => {
  res.json({ orders: [...orders.values()], charges });
});

app.post('/orders', (req, res) => {
  // Charging twice for a retried request is exactly what idempotency keys prevent.
  charges += 1;
  const order = { id: orders.size + 1, item: req.body.item, quantity: req.body.quantity, status: 'paid' };
  orders.set(order.id, order);
  res.status(201).json(order);
});

app.get('/orders/:id', (req, res, next) => {
  const order = orders.get(Number(req.params.id));
  if (!order) return next(); // Express answers with its HTML "Cannot GET" page
  res.json(order);
});

app.get('/reports/daily', () => {
  // Express's default error page shows this message and the stack trace.
  throw new Error('connect ECONNREFUSED postgres://reports:s3cret@db.internal:5432/reports');
});

const port = Number(process.env.PORT || 3000);
const server = app.listen(port, '127.0.0.1', () => {
  console.log(`orders API on http://127.0.0.1:${port}`);
});
server.keepAliveTimeout = 5000;
