// bastion dashboard: polls {base}data, turns cumulative counts into per-second rates
// and draws them as small SVG line charts. No dependencies, nothing fetched from elsewhere.
(function () {
  "use strict";

  var body = document.body;
  var base = body.getAttribute("data-base") || "";
  var refreshMs = parseInt(body.getAttribute("data-refresh-ms"), 10) || 2000;
  var token = new URLSearchParams(window.location.search).get("token");
  var POINTS = 90;
  var COLORS = ["#2f6fde", "#d9822b", "#c23030", "#29a634", "#8f398f", "#00998c", "#a67908", "#5c7080"];
  var SVG_NS = "http://www.w3.org/2000/svg";

  var previous = null;
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

  function rate(now, before, seconds) {
    var delta = (now || 0) - (before || 0);
    // A counter that went down means a restart: count from zero again.
    if (delta < 0) delta = now || 0;
    return seconds > 0 ? delta / seconds : 0;
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

  function fill(tableId, rows, columns) {
    var tbody = document.querySelector("#" + tableId + " tbody");
    tbody.textContent = "";
    if (rows.length === 0) {
      var tr = document.createElement("tr");
      var td = document.createElement("td");
      td.colSpan = columns.length;
      td.className = "empty";
      td.textContent = "none yet";
      tr.appendChild(td);
      tbody.appendChild(tr);
      return;
    }
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      columns.forEach(function (column) {
        var td = document.createElement("td");
        var value = row[column];
        td.textContent = typeof value === "number" ? format(value) : String(value === undefined ? "" : value);
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

  function update(data) {
    var seconds = previous ? data.time - previous.time : 0;
    if (previous && seconds > 0) {
      var now = data.requests;
      var before = previous.requests;
      push("requests", "all", rate(now.total, before.total, seconds));
      push("errors", "4xx", rate(now["4xx"], before["4xx"], seconds));
      push("errors", "5xx", rate(now["5xx"], before["5xx"], seconds));
      push("ratelimited", "429", rate(now["429"], before["429"], seconds));
      Object.keys(data.idempotency).forEach(function (event) {
        push("idempotency", event, rate(data.idempotency[event], previous.idempotency[event], seconds));
      });
      Object.keys(history.idempotency).forEach(function (event) {
        if (!(event in data.idempotency)) push("idempotency", event, 0);
      });
      document.getElementById("tile-rps").textContent = format(history.requests.all.slice(-1)[0]);
      document.getElementById("tile-4xx").textContent = format(history.errors["4xx"].slice(-1)[0]);
      document.getElementById("tile-5xx").textContent = format(history.errors["5xx"].slice(-1)[0]);
      Object.keys(history).forEach(draw);
    }
    document.getElementById("tile-429").textContent = format(data.requests["429"]);
    document.getElementById("tile-total").textContent = format(data.requests.total);
    var validationTotal = 0;
    data.validation.forEach(function (row) { validationTotal += row.count; });
    document.getElementById("tile-validation").textContent = format(validationTotal);
    fill("table-fields", data.validation_fields, ["operation", "field", "count"]);
    fill("table-validation", data.validation, ["operation", "code", "count"]);
    fill("table-problems", entries(data.problems, "code"), ["code", "count"]);
    fill("table-ratelimits", data.rate_limits, ["rule", "outcome", "count"]);
    var dependencies = entries(data.store_errors, "source").map(function (row) {
      row.source = "store " + row.source;
      return row;
    }).concat(entries(data.upstream_errors, "source").map(function (row) {
      row.source = "upstream " + row.source;
      return row;
    })).filter(function (row) { return row.count > 0; });
    fill("table-dependencies", dependencies, ["source", "count"]);
    fill("table-routes", data.routes, ["method", "route", "count", "4xx", "5xx"]);
    previous = data;
    updates += 1;
    body.setAttribute("data-updates", String(updates));
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

  Object.keys(history).forEach(draw);
  poll();
})();
