'use strict';
/**
 * Orders created and delivered per minute over the last 30 minutes, as an SVG bar chart.
 *
 * History comes from /api/stats/throughput/; after that the chart counts live events itself (the same
 * two kinds the API counts: order.created, and order.status to "delivered") instead of polling.
 */
import { api, formatClock, gettext, interpolate, s } from './util.js';

const MINUTES = 30;
const MINUTE_MS = 60_000;
const WIDTH = 420;
const HEIGHT = 200;
const PAD = { left: 26, right: 6, top: 8, bottom: 20 };

const minuteOf = (time) => Math.floor(time / MINUTE_MS) * MINUTE_MS;

export class ThroughputChart {
  constructor(svg) {
    this.svg = svg;
    this.buckets = new Map(); // minute start (ms) → {created, delivered}
    this.loading = null;
    this.queued = [];
    svg.setAttribute('viewBox', `0 0 ${WIDTH} ${HEIGHT}`);
    svg.setAttribute('role', 'img');
    this.title = svg.appendChild(s('title'));
    this.body = svg.appendChild(s('g'));
    // The window slides even when nothing happens.
    setInterval(() => this.render(), 15_000);
  }

  /** (Re)loads history: on start and after every snapshot, whose gap the live counts cannot cover. */
  load() {
    const request = api(`/api/stats/throughput/?minutes=${MINUTES}`)
      .then((rows) => {
        if (request !== this.loading) return;
        this.buckets = new Map();
        for (const row of rows) {
          this.buckets.set(minuteOf(Date.parse(row.minute)), { created: row.created, delivered: row.delivered });
        }
      })
      .catch(() => {
        /* keep what we have; live counting goes on */
      })
      .finally(() => {
        if (request !== this.loading) return;
        // Events that arrived while the history was loading are counted now, on top of it.
        this.loading = null;
        const queued = this.queued;
        this.queued = [];
        queued.forEach((event) => this.count(event));
        this.render();
      });
    this.loading = request;
    return request;
  }

  count(event) {
    if (this.loading) {
      this.queued.push(event);
      return;
    }
    const created = event.type === 'order.created';
    const delivered = event.type === 'order.status' && event.to === 'delivered';
    if (!created && !delivered) return;
    const minute = minuteOf(Date.parse(event.at));
    const bucket = this.buckets.get(minute) || { created: 0, delivered: 0 };
    if (created) bucket.created += 1;
    if (delivered) bucket.delivered += 1;
    this.buckets.set(minute, bucket);
    this.scheduleRender();
  }

  scheduleRender() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = null;
      this.render();
    });
  }

  render() {
    const last = minuteOf(Date.now());
    const series = [];
    for (let index = MINUTES - 1; index >= 0; index -= 1) {
      const minute = last - index * MINUTE_MS;
      series.push({ minute, ...(this.buckets.get(minute) || { created: 0, delivered: 0 }) });
    }
    const peak = Math.max(1, ...series.map((point) => Math.max(point.created, point.delivered)));
    const top = niceCeiling(peak);
    const plotWidth = WIDTH - PAD.left - PAD.right;
    const plotHeight = HEIGHT - PAD.top - PAD.bottom;
    const slot = plotWidth / MINUTES;
    const bar = Math.max(1, slot / 2 - 1);
    const y = (value) => PAD.top + plotHeight - (value / top) * plotHeight;

    const body = s('g');
    for (const tick of [0, top / 2, top]) {
      body.append(
        s('line', { class: 'chart-gridline', x1: PAD.left, x2: WIDTH - PAD.right, y1: y(tick), y2: y(tick) }),
        s('text', { class: 'chart-axis', x: PAD.left - 4, y: y(tick) + 3, 'text-anchor': 'end', text: fmt(tick) }),
      );
    }
    series.forEach((point, index) => {
      const x = PAD.left + index * slot;
      const label = interpolate(
        gettext('%(time)s: %(created)s created, %(delivered)s delivered'),
        { time: formatClock(new Date(point.minute).toISOString()), created: point.created, delivered: point.delivered },
        true,
      );
      const group = s('g', {}, s('title', { text: label }));
      if (point.created) {
        group.append(s('rect', { class: 'chart-created', x: x + 1, y: y(point.created), width: bar, height: y(0) - y(point.created) }));
      }
      if (point.delivered) {
        group.append(
          s('rect', { class: 'chart-delivered', x: x + 1 + bar, y: y(point.delivered), width: bar, height: y(0) - y(point.delivered) }),
        );
      }
      body.append(group);
      if (index % 10 === 0 || index === MINUTES - 1) {
        // The outermost labels hug the edges so that none is cut off.
        const anchor = index === 0 ? 'start' : index === MINUTES - 1 ? 'end' : 'middle';
        body.append(
          s('text', {
            class: 'chart-axis',
            x: anchor === 'start' ? x : anchor === 'end' ? x + slot : x + slot / 2,
            y: HEIGHT - 5,
            'text-anchor': anchor,
            text: formatClock(new Date(point.minute).toISOString()),
          }),
        );
      }
    });
    body.append(s('line', { class: 'chart-baseline', x1: PAD.left, x2: WIDTH - PAD.right, y1: y(0), y2: y(0) }));
    this.body.replaceWith(body);
    this.body = body;

    const created = series.reduce((sum, point) => sum + point.created, 0);
    const delivered = series.reduce((sum, point) => sum + point.delivered, 0);
    const summary = interpolate(
      gettext('Last %(minutes)s minutes: %(created)s orders created, %(delivered)s delivered'),
      { minutes: MINUTES, created, delivered },
      true,
    );
    this.title.textContent = summary;
    this.svg.setAttribute('aria-label', summary);
    this.svg.dataset.created = created;
    this.svg.dataset.delivered = delivered;
  }
}

function niceCeiling(value) {
  if (value <= 2) return 2;
  if (value <= 4) return 4;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * magnitude >= value) return step * magnitude;
  }
  return value;
}

const fmt = (value) => (Number.isInteger(value) ? String(value) : value.toFixed(1));
