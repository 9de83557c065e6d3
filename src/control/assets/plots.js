/* gaittune plots: pure functions `(svgElement, data, options)` that draw into an SVG element
 * (clearing it first) and read nothing else: the live dashboard uses them, and so can a
 * static report. No dependencies, no network. Everything is under `GaitPlots`. */
(function (global) {
  "use strict";

  var COLORS = {
    complete: "#1f5f9e",
    pruned: "#d07a00",
    unsafe: "#c62828",
    fail: "#6b6b6b",
    running: "#6a1b9a",
    best: "#2e7d32",
    grid: "#e3e3e3",
    axis: "#555",
    text: "#222",
  };

  /* ---- data ---------------------------------------------------------------------------- */

  function isNum(v) {
    return typeof v === "number" && isFinite(v);
  }

  /** The intermediate values as sorted [step, value] pairs, from an object {step: value} or
   * an array of pairs. */
  function intermediatePairs(raw) {
    var out = [];
    if (Array.isArray(raw)) {
      raw.forEach(function (p) {
        if (Array.isArray(p) && p.length >= 2) out.push([Number(p[0]), Number(p[1])]);
        else if (p && typeof p === "object") out.push([Number(p.step), Number(p.value)]);
      });
    } else if (raw && typeof raw === "object") {
      Object.keys(raw).forEach(function (k) {
        out.push([Number(k), Number(raw[k])]);
      });
    }
    return out
      .filter(function (p) {
        return isNum(p[0]) && isNum(p[1]);
      })
      .sort(function (a, b) {
        return a[0] - b[0];
      });
  }

  /** One trial as the plots read it, tolerant of missing fields: {number, state, value,
   * params, intermediate: [[step, value]], attrs, unsafe (bool), unsafeDetail, reason}. */
  function normalizeTrial(raw) {
    raw = raw || {};
    var attrs = raw.attrs && typeof raw.attrs === "object" ? raw.attrs : {};
    var reason =
      raw.prune_reason || attrs.prune_reason || attrs.reason || attrs.fail_reason || null;
    var unsafeDetail = attrs.unsafe !== undefined && attrs.unsafe !== null ? attrs.unsafe : null;
    var unsafe =
      unsafeDetail !== null ||
      (typeof reason === "string" && /^unsafe([: ]|$)/.test(reason));
    return {
      number: isNum(raw.number) ? raw.number : Number(raw.number),
      state: String(raw.state || "UNKNOWN").toUpperCase(),
      value: isNum(raw.value) ? raw.value : null,
      // Where a pruned trial stood when it was stopped (no result: drawn apart from values).
      last: Array.isArray(raw.last_intermediate) && isNum(raw.last_intermediate[1])
        ? raw.last_intermediate[1]
        : null,
      params: raw.params && typeof raw.params === "object" ? raw.params : {},
      intermediate: intermediatePairs(raw.intermediate),
      attrs: attrs,
      unsafe: unsafe,
      unsafeDetail: unsafeDetail,
      reason: typeof reason === "string" ? reason : reason === null ? null : JSON.stringify(reason),
    };
  }

  /** Every trial normalised, sorted by number. */
  function normalizeTrials(raw) {
    return (Array.isArray(raw) ? raw : [])
      .map(normalizeTrial)
      .sort(function (a, b) {
        return a.number - b.number;
      });
  }

  /** How a trial is drawn: "unsafe", "complete", "pruned", "fail", "running", "waiting". */
  function kindOf(t) {
    if (t.unsafe) return "unsafe";
    var s = t.state.toLowerCase();
    return s === "complete" || s === "pruned" || s === "fail" || s === "running" ? s : "waiting";
  }

  /** The best value so far after each complete trial: [[number, best]]. */
  function bestSoFar(trials, direction) {
    var out = [];
    var best = null;
    trials.forEach(function (t) {
      if (t.state !== "COMPLETE" || !isNum(t.value)) return;
      if (best === null || (direction === "minimize" ? t.value < best : t.value > best)) {
        best = t.value;
      }
      out.push([t.number, best]);
    });
    return out;
  }

  /* ---- drawing helpers ------------------------------------------------------------------- */

  function clear(svg) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
  }

  function el(svg, parent, name, attrs, text) {
    var e = svg.ownerDocument.createElementNS(svg.namespaceURI, name);
    Object.keys(attrs || {}).forEach(function (k) {
      e.setAttribute(k, attrs[k]);
    });
    if (text !== undefined && text !== null) e.textContent = String(text);
    parent.appendChild(e);
    return e;
  }

  function extent(values) {
    var lo = Infinity;
    var hi = -Infinity;
    values.forEach(function (v) {
      if (isNum(v)) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    });
    if (lo === Infinity) return [0, 1];
    if (lo === hi) {
      var pad = Math.abs(lo) * 0.1 || 1;
      return [lo - pad, hi + pad];
    }
    return [lo, hi];
  }

  /** An extent widened by `frac` of its span on both sides (marks off the frame). */
  function padded(e, frac) {
    var pad = (e[1] - e[0]) * frac;
    return [e[0] - pad, e[1] + pad];
  }

  function ticks(lo, hi, n) {
    if (!(hi > lo)) return [lo];
    var step0 = (hi - lo) / Math.max(1, n);
    var mag = Math.pow(10, Math.floor(Math.log10(step0)));
    var r = step0 / mag;
    var step = mag * (r >= 7.5 ? 10 : r >= 3.5 ? 5 : r >= 1.5 ? 2 : 1);
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      out.push(Math.abs(v) < step * 1e-9 ? 0 : +v.toPrecision(12));
    }
    return out;
  }

  /** A number, short. */
  function fmt(v) {
    if (!isNum(v)) return "–";
    var a = Math.abs(v);
    if (a >= 10000) return v.toExponential(1);
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    if (a >= 0.01 || a === 0) return v.toFixed(2);
    if (a >= 1e-4) return v.toPrecision(2);
    return v.toExponential(1);
  }

  /** A tick label: as many decimals as the tick spacing needs. */
  function tickFmt(v, step) {
    if (!isNum(v)) return "–";
    var a = Math.abs(v);
    if (a >= 1e5 || (a > 0 && a < 1e-4)) return v.toExponential(1);
    var decimals = isNum(step) && step > 0 ? Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9))) : 2;
    return v.toFixed(decimals);
  }

  function size(svg, opts) {
    var w = opts.width || Number(svg.getAttribute("width")) || svg.clientWidth || 600;
    var h = opts.height || Number(svg.getAttribute("height")) || svg.clientHeight || 200;
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    return { w: w, h: h };
  }

  /** Draws the frame (title, grid, tick labels) and returns the scales. */
  function frame(svg, opts, xDomain, yDomain) {
    var dim = size(svg, opts);
    var m = { l: opts.marginLeft || 52, r: opts.marginRight || 12, t: opts.title ? 24 : 8, b: 26 };
    var x0 = m.l;
    var x1 = dim.w - m.r;
    var y0 = dim.h - m.b;
    var y1 = m.t;
    var sx = function (v) {
      return x0 + ((v - xDomain[0]) / (xDomain[1] - xDomain[0] || 1)) * (x1 - x0);
    };
    var sy = function (v) {
      return y0 - ((v - yDomain[0]) / (yDomain[1] - yDomain[0] || 1)) * (y0 - y1);
    };
    var g = el(svg, svg, "g", { "font-family": "sans-serif", "font-size": 12, fill: COLORS.text });
    if (opts.title) el(svg, g, "text", { x: x0, y: 16, "font-weight": "bold" }, opts.title);
    var yt = ticks(yDomain[0], yDomain[1], opts.yTicks || 4);
    yt.forEach(function (v) {
      var y = sy(v);
      el(svg, g, "line", { x1: x0, x2: x1, y1: y, y2: y, stroke: COLORS.grid });
      el(svg, g, "text", { x: x0 - 6, y: y + 4, "text-anchor": "end" }, tickFmt(v, yt[1] - yt[0]));
    });
    var xt = ticks(xDomain[0], xDomain[1], opts.xTicks || Math.max(2, Math.floor((x1 - x0) / 80)));
    if (opts.integerX) {
      xt = xt.filter(function (v) {
        return Math.round(v) === v;
      });
    }
    xt.forEach(function (v) {
      var label = opts.integerX ? String(v) : tickFmt(v, xt[1] - xt[0]);
      el(svg, g, "text", { x: sx(v), y: y0 + 17, "text-anchor": "middle" }, label);
    });
    el(svg, g, "line", { x1: x0, x2: x1, y1: y0, y2: y0, stroke: COLORS.axis });
    el(svg, g, "line", { x1: x0, x2: x0, y1: y0, y2: y1, stroke: COLORS.axis });
    if (opts.xLabel) {
      el(svg, g, "text", { x: x0 - 14, y: y0 + 17, "text-anchor": "end", fill: "#777" }, opts.xLabel);
    }
    return { x: sx, y: sy, g: g, x0: x0, x1: x1, y0: y0, y1: y1, w: dim.w, h: dim.h };
  }

  function path(points, sx, sy) {
    var d = "";
    points.forEach(function (p, i) {
      d += (i ? "L" : "M") + sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1);
    });
    return d;
  }

  function message(svg, opts, text) {
    var dim = size(svg, opts);
    el(svg, svg, "text", {
      x: dim.w / 2,
      y: dim.h / 2,
      "text-anchor": "middle",
      "font-family": "sans-serif",
      "font-size": 13,
      fill: "#888",
    }, text);
  }

  /* ---- charts ---------------------------------------------------------------------------- */

  /** A line chart of `points` ([[x, y]]). Options: title, color, unit, width, height,
   * xLabel, empty (text when there is no point), limits ([low, high] drawn dashed). */
  function lineChart(svg, points, opts) {
    opts = opts || {};
    clear(svg);
    points = (points || []).filter(function (p) {
      return isNum(p[0]) && isNum(p[1]);
    });
    var last = points.length ? points[points.length - 1][1] : null;
    var o = Object.assign({}, opts, {
      title: (opts.title || "") + (last !== null ? "  " + fmt(last) + (opts.unit || "") : ""),
    });
    if (!points.length) {
      frame(svg, o, [0, 1], [0, 1]);
      message(svg, opts, opts.empty || "no data yet");
      return;
    }
    var ys = points.map(function (p) {
      return p[1];
    });
    (opts.limits || []).forEach(function (l) {
      if (isNum(l)) ys.push(l);
    });
    var f = frame(svg, o, extent(points.map(function (p) {
      return p[0];
    })), extent(ys));
    (opts.limits || []).forEach(function (l) {
      if (!isNum(l)) return;
      el(svg, f.g, "line", {
        x1: f.x0, x2: f.x1, y1: f.y(l), y2: f.y(l),
        stroke: COLORS.unsafe, "stroke-dasharray": "4 3",
      });
    });
    el(svg, f.g, "path", {
      d: path(points, f.x, f.y),
      fill: "none",
      stroke: opts.color || COLORS.complete,
      "stroke-width": 1.6,
      "stroke-linejoin": "round",
    });
  }

  function marker(svg, g, kind, x, y) {
    var c = COLORS[kind] || COLORS.fail;
    if (kind === "unsafe") {
      var r = 5;
      return el(svg, g, "path", {
        d: "M" + (x - r) + "," + (y - r) + "L" + (x + r) + "," + (y + r) +
          "M" + (x - r) + "," + (y + r) + "L" + (x + r) + "," + (y - r),
        stroke: c, "stroke-width": 2.4, "class": "mark-unsafe",
      });
    }
    if (kind === "pruned") {
      return el(svg, g, "circle", {
        cx: x, cy: y, r: 4.5, fill: "#fff", stroke: c, "stroke-width": 1.8, "class": "mark-pruned",
      });
    }
    if (kind === "fail") {
      return el(svg, g, "rect", {
        x: x - 3.5, y: y - 3.5, width: 7, height: 7, fill: c, "class": "mark-fail",
      });
    }
    return el(svg, g, "circle", { cx: x, cy: y, r: 4.5, fill: c, "class": "mark-" + kind });
  }

  function legend(svg, g, x, y, items) {
    items.forEach(function (it) {
      if (it.line) {
        el(svg, g, "line", { x1: x - 6, x2: x + 6, y1: y, y2: y, stroke: it.color, "stroke-width": 2 });
      } else {
        marker(svg, g, it.kind, x, y);
      }
      var t = el(svg, g, "text", { x: x + 10, y: y + 4 }, it.label);
      x += 22 + it.label.length * 6.6;
      return t;
    });
  }

  /** The study's history: each trial's value by number (complete filled, pruned hollow,
   * unsafe a red cross, failed a grey square on the floor) and the best-so-far line.
   * `trials` as from normalizeTrials. Options: direction ("maximize" | "minimize"), title,
   * width, height. */
  function historyChart(svg, trials, opts) {
    opts = opts || {};
    clear(svg);
    trials = (trials || []).filter(function (t) {
      return isNum(t.number) && kindOf(t) !== "waiting" && kindOf(t) !== "running";
    });
    if (!trials.length) {
      frame(svg, opts, [0, 1], [0, 1]);
      message(svg, opts, "no finished trial yet");
      return;
    }
    // A pruned (not unsafe) trial is drawn hollow where it stood when stopped.
    var shownAt = function (t) {
      if (isNum(t.value)) return t.value;
      return kindOf(t) === "pruned" && isNum(t.last) ? t.last : null;
    };
    var values = trials.map(shownAt);
    var ys = padded(extent(values), 0.06);
    var xs = extent(trials.map(function (t) {
      return t.number;
    }));
    xs = [xs[0] - 0.5, xs[1] + 0.5];
    var f = frame(svg, Object.assign({ integerX: true, xLabel: "trial" }, opts), xs, ys);
    var best = bestSoFar(trials, opts.direction);
    if (best.length) {
      best.push([xs[1], best[best.length - 1][1]]);
      var d = "";
      best.forEach(function (p, i) {
        var x = f.x(p[0]).toFixed(1);
        var y = f.y(p[1]).toFixed(1);
        d += i ? "H" + x + "V" + y : "M" + x + "," + y;
      });
      el(svg, f.g, "path", {
        d: d, fill: "none", stroke: COLORS.best, "stroke-width": 2, "class": "best-line",
      });
    }
    var floor = f.y0 - 6;
    trials.forEach(function (t) {
      var kind = kindOf(t);
      var y = isNum(shownAt(t)) ? f.y(shownAt(t)) : floor;
      var m = marker(svg, f.g, kind, f.x(t.number), y);
      el(svg, m, "title", {}, "trial " + t.number + " " + (t.unsafe ? "UNSAFE" : t.state) +
        (isNum(t.value) ? " value " + fmt(t.value) : "") + (t.reason ? " (" + t.reason + ")" : ""));
    });
    legend(svg, f.g, f.x0 + 160, 12, [
      { kind: "complete", label: "complete" },
      { kind: "pruned", label: "pruned" },
      { kind: "unsafe", label: "unsafe" },
      { kind: "fail", label: "failed" },
      { line: true, color: COLORS.best, label: "best so far" },
    ]);
  }

  /** The intermediate values of every trial by step, one line per trial (the best thicker,
   * green). Options: direction, title, width, height. */
  function curvesChart(svg, trials, opts) {
    opts = opts || {};
    clear(svg);
    var withCurves = (trials || []).filter(function (t) {
      return t.intermediate && t.intermediate.length;
    });
    if (!withCurves.length) {
      frame(svg, opts, [0, 1], [0, 1]);
      message(svg, opts, "no intermediate values yet");
      return;
    }
    var xs = [];
    var ys = [];
    withCurves.forEach(function (t) {
      t.intermediate.forEach(function (p) {
        xs.push(p[0]);
        ys.push(p[1]);
      });
    });
    var f = frame(svg, Object.assign({ xLabel: "step" }, opts), extent(xs), padded(extent(ys), 0.04));
    var best = null;
    (trials || []).forEach(function (t) {
      if (t.state !== "COMPLETE" || !isNum(t.value)) return;
      if (!best || (opts.direction === "minimize" ? t.value < best.value : t.value > best.value)) {
        best = t;
      }
    });
    withCurves.forEach(function (t) {
      if (t === best) return;
      var kind = kindOf(t);
      var p = el(svg, f.g, "path", {
        d: path(t.intermediate, f.x, f.y),
        fill: "none",
        stroke: COLORS[kind] || COLORS.fail,
        "stroke-width": 1.2,
        "stroke-opacity": 0.55,
        "stroke-dasharray": kind === "pruned" ? "4 2" : "none",
      });
      el(svg, p, "title", {}, "trial " + t.number);
      if (kind === "pruned" || kind === "unsafe") {
        var lastP = t.intermediate[t.intermediate.length - 1];
        marker(svg, f.g, kind, f.x(lastP[0]), f.y(lastP[1]));
      }
    });
    if (best && best.intermediate.length) {
      var bp = el(svg, f.g, "path", {
        d: path(best.intermediate, f.x, f.y),
        fill: "none",
        stroke: COLORS.best,
        "stroke-width": 3,
      });
      el(svg, bp, "title", {}, "best: trial " + best.number);
    }
  }

  var RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

  /** A colour on a dark-purple → yellow ramp for u in [0, 1]. */
  function rampColor(u) {
    u = Math.max(0, Math.min(1, isNum(u) ? u : 0));
    var i = Math.min(RAMP.length - 2, Math.floor(u * (RAMP.length - 1)));
    var f = u * (RAMP.length - 1) - i;
    var c = RAMP[i].map(function (a, k) {
      return Math.round(a + (RAMP[i + 1][k] - a) * f);
    });
    return "rgb(" + c.join(",") + ")";
  }

  /** Parallel coordinates: one axis per parameter (options.params, or every one seen) and
   * one for the value; one line per finished trial, coloured by value (yellow is better);
   * unsafe trials red and dashed, trials without a value grey. Text parameters get one tick
   * per category. Options: params, direction, title, width, height. */
  function parallelCoordinates(svg, trials, opts) {
    opts = opts || {};
    clear(svg);
    trials = (trials || []).filter(function (t) {
      var k = kindOf(t);
      return k !== "waiting" && k !== "running";
    });
    var names = opts.params;
    if (!names) {
      var seen = {};
      names = [];
      trials.forEach(function (t) {
        Object.keys(t.params).forEach(function (n) {
          if (!seen[n]) {
            seen[n] = true;
            names.push(n);
          }
        });
      });
    }
    var dim = size(svg, opts);
    if (!trials.length || !names.length) {
      message(svg, opts, "no finished trial yet");
      return;
    }
    var axes = names.map(function (n) {
      var vals = trials.map(function (t) {
        return t.params[n];
      });
      var cats = null;
      if (vals.some(function (v) {
        return v !== undefined && v !== null && typeof v !== "number";
      })) {
        cats = [];
        vals.forEach(function (v) {
          var s = String(v);
          if (v !== undefined && v !== null && cats.indexOf(s) < 0) cats.push(s);
        });
        cats.sort();
      }
      var get = cats
        ? function (t) {
            var v = t.params[n];
            return v === undefined || v === null ? null : cats.indexOf(String(v));
          }
        : function (t) {
            return isNum(t.params[n]) ? t.params[n] : null;
          };
      var dom = cats ? [-0.5, Math.max(0.5, cats.length - 0.5)] : extent(trials.map(get));
      return { name: n, get: get, dom: dom, cats: cats };
    });
    axes.push({
      name: "value",
      get: function (t) {
        return t.value;
      },
      dom: extent(trials.map(function (t) {
        return t.value;
      })),
      cats: null,
    });
    var m = { l: 40, r: 56, t: opts.title ? 40 : 22, b: 30 };
    var g = el(svg, svg, "g", { "font-family": "sans-serif", "font-size": 12, fill: COLORS.text });
    if (opts.title) el(svg, g, "text", { x: 8, y: 16, "font-weight": "bold" }, opts.title);
    var ax = function (i) {
      return m.l + (i * (dim.w - m.l - m.r)) / Math.max(1, axes.length - 1);
    };
    var ay = function (a, v) {
      return dim.h - m.b - ((v - a.dom[0]) / (a.dom[1] - a.dom[0] || 1)) * (dim.h - m.b - m.t);
    };
    var vdom = axes[axes.length - 1].dom;
    var lines = el(svg, g, "g", { fill: "none" });
    var order = trials.slice().sort(function (a, b) {
      // The better ones last, on top.
      var va = isNum(a.value) ? a.value : -Infinity;
      var vb = isNum(b.value) ? b.value : -Infinity;
      return opts.direction === "minimize" ? vb - va : va - vb;
    });
    order.forEach(function (t) {
      var d = "";
      var pen = false;
      axes.forEach(function (a, i) {
        var v = a.get(t);
        if (!isNum(v)) {
          pen = false;
          return;
        }
        d += (pen ? "L" : "M") + ax(i).toFixed(1) + "," + ay(a, v).toFixed(1);
        pen = true;
      });
      var u = isNum(t.value) ? (t.value - vdom[0]) / (vdom[1] - vdom[0] || 1) : null;
      if (u !== null && opts.direction === "minimize") u = 1 - u;
      var p = el(svg, lines, "path", {
        d: d,
        stroke: t.unsafe ? COLORS.unsafe : u === null ? "#aaa" : rampColor(u),
        "stroke-width": t.unsafe ? 1.6 : 1.8,
        "stroke-opacity": t.unsafe || u === null ? 0.7 : 0.85,
        "stroke-dasharray": t.unsafe ? "5 3" : "none",
      });
      el(svg, p, "title", {}, "trial " + t.number + (isNum(t.value) ? " value " + fmt(t.value) : ""));
    });
    axes.forEach(function (a, i) {
      var x = ax(i);
      el(svg, g, "line", { x1: x, x2: x, y1: m.t, y2: dim.h - m.b, stroke: COLORS.axis });
      el(svg, g, "text", {
        x: x, y: dim.h - m.b + 18, "text-anchor": "middle", "font-weight": "bold",
      }, a.name);
      var labels = a.cats
        ? a.cats.map(function (c, k) {
            return [k, c];
          })
        : [[a.dom[0], fmt(a.dom[0])], [a.dom[1], fmt(a.dom[1])]];
      labels.forEach(function (l) {
        var y = ay(a, l[0]);
        el(svg, g, "text", {
          x: x + 4, y: y + (a.cats ? 4 : l[0] === a.dom[0] ? -3 : 11), "font-size": 11,
          fill: "#444", stroke: "#fff", "stroke-width": 3, "paint-order": "stroke",
        }, l[1]);
      });
    });
    var defsId = "pc-ramp-" + Math.random().toString(36).slice(2, 8);
    var defs = el(svg, svg, "defs", {});
    var grad = el(svg, defs, "linearGradient", { id: defsId, x1: 0, x2: 1, y1: 0, y2: 0 });
    for (var k = 0; k <= 4; k++) {
      el(svg, grad, "stop", { offset: k / 4, "stop-color": rampColor(k / 4) });
    }
    var lx = dim.w - m.r - 150;
    el(svg, g, "text", { x: lx - 6, y: (opts.title ? 16 : 12) + 2, "text-anchor": "end", "font-size": 11 },
      "worse");
    el(svg, g, "rect", { x: lx, y: opts.title ? 8 : 4, width: 110, height: 10, fill: "url(#" + defsId + ")" });
    el(svg, g, "text", { x: lx + 116, y: (opts.title ? 16 : 12) + 2, "font-size": 11 }, "better");
  }

  /** One parameter against the value (Optuna's slice plot): each finished trial at its value
   * of `name` (x) and its value (y); complete filled, pruned hollow, failed and unsafe trials
   * without a value on a strip at the bottom, unsafe ones as red crosses, so where the
   * unsafe trials fell shows at a glance. Options: title, width, height, choices (labels of
   * a categorical's values, in order), log (log-scaled x). */
  function sliceChart(svg, trials, name, opts) {
    opts = opts || {};
    clear(svg);
    var choices = opts.choices || null;
    var xOf = function (t) {
      var v = t.params[name];
      if (choices) {
        var i = choices.findIndex(function (c) {
          return String(c) === String(v);
        });
        return i >= 0 ? i : null;
      }
      if (!isNum(v)) return null;
      return opts.log ? (v > 0 ? Math.log10(v) : null) : v;
    };
    var shown = (trials || []).filter(function (t) {
      var k = kindOf(t);
      return k !== "waiting" && k !== "running" && xOf(t) !== null;
    });
    var o = Object.assign({}, opts, { title: opts.title || name });
    if (!shown.length) {
      frame(svg, o, [0, 1], [0, 1]);
      message(svg, opts, "no finished trial yet");
      return;
    }
    var values = shown.filter(function (t) {
      return !t.unsafe;
    }).map(function (t) {
      return t.value;
    });
    var xs = choices ? [-0.5, choices.length - 0.5] : padded(extent(shown.map(xOf)), 0.04);
    var f = frame(svg, Object.assign({ xTicks: choices ? 1 : undefined }, o), xs, padded(extent(values), 0.08));
    if (choices) {
      choices.forEach(function (c, i) {
        el(svg, f.g, "text", { x: f.x(i), y: f.y0 + 17, "text-anchor": "middle" }, String(c));
      });
    } else if (opts.log) {
      el(svg, f.g, "text", { x: f.x1, y: f.y0 + 17, "text-anchor": "end", fill: "#777" }, "log10");
    }
    var strip = f.y0 - 6;
    shown.forEach(function (t) {
      var kind = kindOf(t);
      var jitter = choices ? ((t.number * 0.6180339887) % 1 - 0.5) * 0.5 : 0;
      var y = isNum(t.value) && kind !== "unsafe" ? f.y(t.value) : strip;
      var m = marker(svg, f.g, kind, f.x(xOf(t) + jitter), y);
      el(svg, m, "title", {}, "trial " + t.number + " " + name + " = " + t.params[name] +
        (isNum(t.value) ? ", value " + fmt(t.value) : "") + (t.unsafe ? " (unsafe)" : ""));
    });
  }

  /** Horizontal bars, largest first: `items` [{label, value}] with values in [0, 1] (e.g.
   * parameter importances). Options: title, width, height, color. */
  function barChart(svg, items, opts) {
    opts = opts || {};
    clear(svg);
    var dim = size(svg, opts);
    items = (items || []).filter(function (it) {
      return isNum(it.value);
    }).sort(function (a, b) {
      return b.value - a.value;
    });
    var g = el(svg, svg, "g", { "font-family": "sans-serif", "font-size": 12, fill: COLORS.text });
    var top = opts.title ? 26 : 6;
    if (opts.title) el(svg, g, "text", { x: 4, y: 16, "font-weight": "bold" }, opts.title);
    if (!items.length) {
      message(svg, opts, opts.empty || "not enough trials yet");
      return;
    }
    var labelW = 12 + 7 * Math.max.apply(null, items.map(function (it) {
      return String(it.label).length;
    }));
    var row = Math.max(14, Math.min(26, (dim.h - top - 4) / items.length));
    var max = Math.max.apply(null, items.map(function (it) {
      return it.value;
    })) || 1;
    var x0 = labelW;
    var x1 = dim.w - 56;
    items.forEach(function (it, i) {
      var y = top + i * row;
      el(svg, g, "text", { x: x0 - 6, y: y + row * 0.65, "text-anchor": "end" }, it.label);
      el(svg, g, "rect", {
        x: x0, y: y + 2, height: row - 5, width: Math.max(1, (it.value / max) * (x1 - x0)),
        fill: opts.color || COLORS.complete, "class": "bar",
      });
      el(svg, g, "text", { x: x0 + (it.value / max) * (x1 - x0) + 5, y: y + row * 0.65 }, fmt(it.value));
    });
  }

  global.GaitPlots = {
    COLORS: COLORS,
    normalizeTrial: normalizeTrial,
    normalizeTrials: normalizeTrials,
    intermediatePairs: intermediatePairs,
    kindOf: kindOf,
    bestSoFar: bestSoFar,
    fmt: fmt,
    tickFmt: tickFmt,
    ticks: ticks,
    rampColor: rampColor,
    lineChart: lineChart,
    historyChart: historyChart,
    curvesChart: curvesChart,
    parallelCoordinates: parallelCoordinates,
    sliceChart: sliceChart,
    barChart: barChart,
  };
})(typeof window !== "undefined" ? window : this);
