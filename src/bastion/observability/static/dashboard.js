// bastion dashboard: polls {base}data, whose rates the server computes over its last few
// seconds (so the first paint already has them), and draws them as small SVG line charts.
// No dependencies, nothing fetched from elsewhere.
(function () {
  "use strict";

  var body = document.body;
  var base = body.getAttribute("data-base") || "";
  var refreshMs = parseInt(body.getAttribute("data-refresh-ms"), 10) || 2000;
  var token = new URLSearchParams(window.location.search).get("token");
  var POINTS = 90;
  var COLORS = ["#2f6fde", "#d9822b", "#c23030", "#29a634", "#8f398f", "#00998c", "#a67908", "#5c7080"];
  var SVG_NS = "http://www.w3.org/2000/svg";

  var history = { requests: {}, errors: {}, ratelimited: {}, idempotency: {} };
  var updates = 0;

  function push(chart, name, value) {
    var series = history[chart][name];
    if (!series) {
      series = history[chart][name] = [];
      // A series that appears late starts with zeros, so lines stay aligned in time.
      var length = 0;
      Object.keys(history[chart]).forEach(function (other) {
        length = Math.max(length, history[chart][other].length);
      });
      for (var i = 0; i < length - 1; i++) series.push(0);
    }
    series.push(value);
    while (series.length > POINTS) series.shift();
  }

  function draw(chart) {
    var svg = document.querySelector('svg[data-chart="' + chart + '"]');
    var legend = document.querySelector('[data-legend="' + chart + '"]');
    var max = 0;
    // Series that stayed at zero over the whole window are left out: a guard may
    // register a dozen event kinds, and flat lines only hide the ones that moved.
    var names = Object.keys(history[chart]).sort().filter(function (name) {
      var peak = 0;
      history[chart][name].forEach(function (v) { if (v > peak) peak = v; });
      if (peak > max) max = peak;
      return peak > 0 || chart === "requests" || chart === "errors" || chart === "ratelimited";
    });
    var top = max > 0 ? max * 1.15 : 1;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    for (var g = 1; g < 4; g++) {
      var line = document.createElementNS(SVG_NS, "line");
      line.setAttribute("x1", "0");
      line.setAttribute("x2", "400");
      line.setAttribute("y1", String(g * 35));
      line.setAttribute("y2", String(g * 35));
      line.setAttribute("class", "grid");
      svg.appendChild(line);
    }
    var label = document.createElementNS(SVG_NS, "text");
    label.setAttribute("x", "4");
    label.setAttribute("y", "12");
    label.setAttribute("class", "scale");
    label.textContent = format(top);
    svg.appendChild(label);
    legend.textContent = "";
    names.forEach(function (name, index) {
      var values = history[chart][name];
      var step = 400 / (POINTS - 1);
      var offset = (POINTS - values.length) * step;
      var points = values.map(function (v, i) {
        var x = offset + i * step;
        var y = 140 - (v / top) * 136;
        return x.toFixed(1) + "," + y.toFixed(1);
      });
      var color = COLORS[index % COLORS.length];
      var polyline = document.createElementNS(SVG_NS, "polyline");
      polyline.setAttribute("points", points.join(" "));
      polyline.setAttribute("stroke", color);
      polyline.setAttribute("data-series", name);
      polyline.setAttribute("data-last", String(values[values.length - 1]));
      svg.appendChild(polyline);
      var item = document.createElement("span");
      var swatch = document.createElement("i");
      swatch.style.background = color;
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(name + " " + format(values[values.length - 1])));
      legend.appendChild(item);
    });
    if (names.length === 0) {
      var empty = document.createElement("span");
      empty.className = "empty";
      empty.textContent = "no events yet";
      legend.appendChild(empty);
    }
  }

  function format(value) {
    if (value >= 1000) return (value / 1000).toFixed(1) + "k";
    if (value >= 10 || Number.isInteger(value)) return String(Math.round(value));
    return value.toFixed(2);
  }

  function seconds(value) {
    if (value >= 1) return value.toFixed(2) + " s";
    var ms = value * 1000;
    return (ms >= 10 ? String(Math.round(ms)) : ms.toFixed(1)) + " ms";
  }

  function clock(epoch) {
    return new Date(epoch * 1000).toISOString().slice(11, 19);
  }

  function span(value) {
    if (value >= 3600) return (value / 3600).toFixed(1) + " h";
    if (value >= 60) return Math.round(value / 60) + " min";
    return (value >= 10 ? String(Math.round(value)) : value.toFixed(1)) + " s";
  }

  var FORMATS = { p50: seconds, p95: seconds, p99: seconds, time: clock, status: String };

  function fill(tableId, rows, columns, emptyText) {
    var tbody = document.querySelector("#" + tableId + " tbody");
    tbody.textContent = "";
    if (rows.length === 0) {
      var tr = document.createElement("tr");
      var td = document.createElement("td");
      td.colSpan = columns.length;
      td.className = "empty";
      td.textContent = emptyText || "none yet";
      tr.appendChild(td);
      tbody.appendChild(tr);
      return;
    }
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      columns.forEach(function (column) {
        var td = document.createElement("td");
        var value = row[column];
        var show = FORMATS[column] || (typeof value === "number" ? format : String);
        td.textContent = value === undefined || value === null ? "\u2013" : show(value);
        // Long routes and operation ids are cut with an ellipsis: the tooltip has them whole.
        td.title = td.textContent;
        if (column === "trace_id" || column === "client") td.className = "mono";
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
  }

  function entries(map, keyName) {
    return Object.keys(map).sort(function (a, b) { return map[b] - map[a]; }).map(function (key) {
      var row = { count: map[key] };
      row[keyName] = key;
      return row;
    });
  }

  // Past the clients it tracks, a table's counts are upper bounds: shown as such.
  function clients(rows) {
    return rows.map(function (row) {
      return { client: row.client, count: row.error > 0 ? "\u2264 " + row.count : row.count };
    });
  }

  function update(data) {
    var rates = data.rates;
    push("requests", "all", rates.requests.total);
    push("errors", "4xx", rates.requests["4xx"]);
    push("errors", "5xx", rates.requests["5xx"]);
    push("ratelimited", "429", rates.requests["429"]);
    Object.keys(rates.idempotency).forEach(function (event) {
      push("idempotency", event, rates.idempotency[event]);
    });
    Object.keys(history.idempotency).forEach(function (event) {
      if (!(event in rates.idempotency)) push("idempotency", event, 0);
    });
    Object.keys(history).forEach(draw);
    document.getElementById("tile-rps").textContent = format(rates.requests.total);
    document.getElementById("tile-4xx").textContent = format(rates.requests["4xx"]);
    document.getElementById("tile-5xx").textContent = format(rates.requests["5xx"]);
    var over = "last " + span(data.window_seconds);
    Array.prototype.forEach.call(document.querySelectorAll(".window"), function (node) {
      node.textContent = over;
    });
    fill("table-latency", data.latency, ["method", "route", "count", "p50", "p95", "p99"], "no requests in the " + over);
    fill("table-5xx", data.recent_5xx, ["time", "method", "route", "status", "trace_id"]);
    fill("table-clients-429", clients(data.top_clients.rate_limited), ["client", "count"]);
    fill("table-clients-validation", clients(data.top_clients.validation), ["client", "count"]);
    document.getElementById("tile-429").textContent = format(data.requests["429"]);
    document.getElementById("tile-total").textContent = format(data.requests.total);
    var validationTotal = 0;
    data.validation.forEach(function (row) { validationTotal += row.count; });
    document.getElementById("tile-validation").textContent = format(validationTotal);
    fill("table-fields", data.validation_fields, ["operation", "field", "count"]);
    fill("table-validation", data.validation, ["operation", "code", "count"]);
    fill("table-problems", entries(data.problems, "code"), ["code", "count"]);
    fill("table-ratelimits", data.rate_limits, ["rule", "outcome", "count"]);
    fill("table-refusals", data.refusals || [], ["guard", "code", "live", "shadow"]);
    var dependencies = entries(data.store_errors, "source").map(function (row) {
      row.source = "store " + row.source;
      return row;
    }).concat(entries(data.upstream_errors, "source").map(function (row) {
      row.source = "upstream " + row.source;
      return row;
    })).filter(function (row) { return row.count > 0; });
    fill("table-dependencies", dependencies, ["source", "count"]);
    fill("table-routes", data.routes, ["method", "route", "count", "4xx", "5xx"]);
    rules(data);
    updates += 1;
    body.setAttribute("data-updates", String(updates));
  }

  function rules(data) {
    if (!data.rules) return;
    fill("table-rules", data.rules.map(function (rule) {
      return {
        rule: rule.name,
        mode: rule.mode,
        percent: rule.enforce_percent === null ? 100 : rule.enforce_percent,
        limit: rule.limit,
        tiers: Object.keys(rule.tiers).map(function (t) { return t + ": " + rule.tiers[t]; }).join(", "),
        layer: rule.layer
      };
    }), ["rule", "mode", "percent", "limit", "tiers", "layer"], "no rule");
    fill("table-suggestions", (data.suggestions || []).map(function (s) {
      return {
        rule: s.rule, tier: s.tier || "\u2013", current: s.current, clients: s.clients,
        p50: s.p50, p95: s.p95, p99: s.p99, max: s.max, suggested: s.suggested, refused: s.refused
      };
    }), ["rule", "tier", "current", "clients", "p50", "p95", "p99", "max", "suggested", "refused"],
    "no traffic observed yet");
    if (data.suggest_at) {
      document.getElementById("suggest-note").textContent = "from this process's observed client rates: p" +
        data.suggest_at.percentile + " \u00d7 " + data.suggest_at.headroom + " headroom";
    }
    var controls = document.getElementById("controls");
    controls.hidden = !data.controls;
    var select = document.getElementById("control-rule");
    var names = data.rules.map(function (rule) { return rule.name; });
    if (select.getAttribute("data-names") !== names.join("\n")) {
      select.textContent = "";
      names.forEach(function (name) {
        var option = document.createElement("option");
        option.value = option.textContent = name;
        select.appendChild(option);
      });
      select.setAttribute("data-names", names.join("\n"));
    }
  }

  function control(event) {
    event.preventDefault();
    var result = document.getElementById("control-result");
    var field = document.getElementById("control-field").value;
    var value = document.getElementById("control-value").value.trim();
    var change = {};
    change[field] = field === "enforce_percent" ? parseInt(value, 10) : value;
    var rule = document.getElementById("control-rule").value;
    result.className = "note";
    result.textContent = "sending\u2026";
    fetch(base + "admin/v1/rules/" + encodeURIComponent(rule), {
      method: "PATCH",
      headers: {
        "Content-Type": "application/json",
        Authorization: "Bearer " + document.getElementById("control-token").value
      },
      body: JSON.stringify(change),
      cache: "no-store",
      credentials: "omit"
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) {
          var reasons = (body.errors || []).map(function (e) { return e.reason || e.detail || e.code; });
          throw new Error((body.detail || body.title || "HTTP " + response.status) +
            (reasons.length ? ": " + reasons.join("; ") : ""));
        }
        result.className = "note ok";
        result.textContent = rule + ": " + field + " is now " + body.entry[field] + " (admin version " +
          body.change.version + ")";
      });
    }).catch(function (error) {
      result.className = "note down";
      result.textContent = error.message;
    });
  }

  function setStatus(text, ok) {
    var status = document.getElementById("status");
    status.textContent = text;
    status.className = ok ? "status ok" : "status down";
  }

  function poll() {
    var headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    fetch(base + "data", { headers: headers, cache: "no-store", credentials: "omit" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        update(data);
        setStatus("live, every " + refreshMs / 1000 + " s", true);
      })
      .catch(function (error) {
        setStatus("no data: " + error.message, false);
      })
      .then(function () {
        window.setTimeout(poll, refreshMs);
      });
  }

  document.getElementById("control-form").addEventListener("submit", control);
  Object.keys(history).forEach(draw);
  poll();
})();
