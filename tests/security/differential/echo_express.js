// An Express app that reports how Express reads a request's `role` in every place:
// the query (qs, Express's default "extended" parser), the `x-role` header, the
// `role` cookie (the `cookie` module that cookie-parser uses), an urlencoded body
// (body-parser, extended) and a multipart body (the Fetch API's FormData parser).
const express = require("express");
const cookie = require("cookie");

const app = express();
app.use(express.urlencoded({ extended: true }));

function reply(res, body) {
  res.set("content-type", "application/json").send(JSON.stringify(body));
}

app.post("/echo", async (req, res) => {
  const readings = {
    query: req.query.role,
    header: req.get("x-role"),
    cookie: req.headers.cookie === undefined ? undefined : cookie.parse(req.headers.cookie).role,
  };
  const type = req.get("content-type") || "";
  if (type.startsWith("application/x-www-form-urlencoded")) {
    readings.form = req.body.role;
  } else if (type.startsWith("multipart/form-data")) {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    try {
      const form = await new Response(Buffer.concat(chunks), { headers: { "content-type": type } }).formData();
      readings.form = form.has("role") ? form.getAll("role").map(String) : undefined;
      if (Array.isArray(readings.form) && readings.form.length === 1) readings.form = readings.form[0];
    } catch (err) {
      readings.form = "<unreadable>";
    }
  }
  reply(res, readings);
});

app.get("/ready", (req, res) => reply(res, { ok: true }));

const server = app.listen(Number(process.env.PORT), "127.0.0.1");
server.keepAliveTimeout = 1000;
