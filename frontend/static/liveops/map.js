'use strict';
/**
 * A tile-free SVG map of Kyiv: restaurants, destinations and couriers moving live.
 *
 * The network is closed and the coordinates are synthetic anyway (simulators/geo.py hashes addresses
 * into Kyiv's box), so a linear projection of that box with a grid and the Dnipro drawn in reads as a
 * map without any tiles. Couriers glide between positions with a CSS transition on `transform`.
 */
import { TERMINAL, gettext, interpolate, s } from './util.js';

export const BOUNDS = { latMin: 50.38, latMax: 50.52, lngMin: 30.4, lngMax: 30.65 };
// 0.25° of longitude is ~17.7 km at this latitude and 0.14° of latitude ~15.6 km: keep that aspect.
// User units are close to CSS pixels at the dashboard's panel size, so sizes below read as pixels.
const WIDTH = 400;
const HEIGHT = 350;
const COURIER_FRESH_MS = 60_000; // a courier with no active order is shown while it keeps reporting

export function project(point) {
  const [lat, lng] = point;
  return [
    ((lng - BOUNDS.lngMin) / (BOUNDS.lngMax - BOUNDS.lngMin)) * WIDTH,
    ((BOUNDS.latMax - lat) / (BOUNDS.latMax - BOUNDS.latMin)) * HEIGHT,
  ];
}

const hasPoint = (point) => Array.isArray(point) && Number.isFinite(point[0]) && Number.isFinite(point[1]);
const round = (value) => Math.round(value * 10) / 10;

// The Dnipro through Kyiv, roughly, as (lat, lng): enough for orientation, not for navigation.
const RIVER = [
  [50.535, 30.5], [50.505, 30.515], [50.485, 30.53], [50.468, 30.545], [50.452, 30.565],
  [50.435, 30.578], [50.415, 30.588], [50.395, 30.598], [50.37, 30.61],
];
const DESENKA = [[50.535, 30.575], [50.5, 30.58], [50.47, 30.585], [50.45, 30.58], [50.435, 30.578]];

function pathOf(points) {
  return points
    .map((point, index) => {
      const [x, y] = project(point);
      return (index ? 'L' : 'M') + round(x) + ' ' + round(y);
    })
    .join(' ');
}

export class LiveMap {
  /**
   * @param {SVGSVGElement} svg  an empty <svg> (data-testid="map")
   * @param {object} options  compact: fewer labels (the tracking page's small map)
   */
  constructor(svg, { compact = false } = {}) {
    this.svg = svg;
    this.compact = compact;
    this.selected = null;
    this.restaurants = new Map(); // id → {id, name, location}
    this.couriers = new Map(); // id → {id, name, lat, lng, at, reportedAt}
    this.nodes = { restaurants: new Map(), destinations: new Map(), couriers: new Map() };
    svg.setAttribute('viewBox', `0 0 ${WIDTH} ${HEIGHT}`);
    svg.setAttribute('preserveAspectRatio', 'xMidYMid meet');
    svg.classList.add('map');
    this.drawBackground();
    this.layers = {};
    for (const name of ['routes', 'destinations', 'restaurants', 'couriers']) {
      this.layers[name] = svg.appendChild(s('g', { class: `map-${name}` }));
    }
  }

  drawBackground() {
    const grid = s('g', { class: 'map-grid', 'aria-hidden': 'true' });
    grid.append(s('rect', { class: 'map-land', x: 0, y: 0, width: WIDTH, height: HEIGHT }));
    // A line every 0.02°, labelled, so distances can be judged (~1.4 km east-west, ~2.2 km north-south).
    // Labels on every other line only: more would crowd the small panel.
    for (let step = 1; step * 0.02 < BOUNDS.lngMax - BOUNDS.lngMin; step += 1) {
      const lng = BOUNDS.lngMin + step * 0.02;
      const [x] = project([BOUNDS.latMin, lng]);
      grid.append(s('line', { x1: round(x), y1: 0, x2: round(x), y2: HEIGHT }));
      if (!this.compact && step % 2 === 0) {
        grid.append(s('text', { x: round(x) + 2, y: HEIGHT - 4, text: lng.toFixed(2) }));
      }
    }
    for (let step = 1; step * 0.02 < BOUNDS.latMax - BOUNDS.latMin; step += 1) {
      const lat = BOUNDS.latMin + step * 0.02;
      const [, y] = project([lat, BOUNDS.lngMin]);
      grid.append(s('line', { x1: 0, y1: round(y), x2: WIDTH, y2: round(y) }));
      if (!this.compact && step % 2 === 0) grid.append(s('text', { x: 3, y: round(y) - 3, text: lat.toFixed(2) }));
    }
    const river = s('g', { class: 'map-river', 'aria-hidden': 'true' });
    river.append(s('path', { d: pathOf(RIVER), class: 'map-river-main' }));
    river.append(s('path', { d: pathOf(DESENKA), class: 'map-river-branch' }));
    const [labelX, labelY] = project([50.404, 30.595]); // the southern stretch: fewer markers there
    const riverName = gettext('Dnipro');
    river.append(s('text', { class: 'map-river-label', x: round(labelX) + 9, y: round(labelY), text: riverName }));
    // Restaurant labels keep clear of the river's name too (see label()).
    this.labelBoxes = [[labelX + 9, labelY - 8, labelX + 9 + riverName.length * 5.8, labelY + 3]];
    this.svg.append(grid, river);
  }

  /**
   * Redraws everything the orders imply. Cheap enough for hundreds of orders; called per frame batch.
   * `onlyOrderCouriers`: show only the couriers of these orders (the board is filtered), not every
   * courier that reported a position lately.
   */
  render(orders, { onlyOrderCouriers = false } = {}) {
    this.onlyOrderCouriers = onlyOrderCouriers;
    const activeCouriers = new Set();
    const destinations = new Map();
    for (const order of orders.values()) {
      for (const restaurant of order.restaurants || []) {
        if (hasPoint(restaurant.location)) this.restaurants.set(restaurant.id, restaurant);
      }
      if (order.courier) this.updateCourier(order.courier, false);
      if (TERMINAL.has(order.status) && order.id !== this.selected) continue;
      if (hasPoint(order.destination)) destinations.set(order.id, order);
      if (order.courier) activeCouriers.add(order.courier.id);
    }
    const selected = this.selected !== null && orders.get(this.selected);
    this.drawRestaurants();
    this.drawDestinations(destinations);
    this.drawCouriers(activeCouriers, selected && selected.courier ? selected.courier.id : null);
    this.drawRoutes(orders);
  }

  /**
   * A courier position from an order payload or a locations frame (`reported`); an older report never
   * wins. Only reports keep a courier without an active order on the map, and only for a minute.
   */
  updateCourier(courier, reported) {
    if (!courier || !Number.isFinite(courier.lat) || !Number.isFinite(courier.lng)) return;
    const known = this.couriers.get(courier.id);
    if (known && known.at && courier.at && Date.parse(courier.at) < Date.parse(known.at)) return;
    const reportedAt = reported ? Date.now() : known ? known.reportedAt : 0;
    this.couriers.set(courier.id, { ...courier, reportedAt });
  }

  moveCouriers(couriers, orders) {
    for (const courier of couriers) this.updateCourier(courier, true);
    this.render(orders, { onlyOrderCouriers: this.onlyOrderCouriers });
  }

  select(orderId, orders) {
    this.selected = orderId;
    this.render(orders);
  }

  drawRestaurants() {
    for (const restaurant of this.restaurants.values()) {
      if (this.nodes.restaurants.has(restaurant.id)) continue;
      const [x, y] = project(restaurant.location);
      const node = s(
        'g',
        { class: 'map-restaurant', transform: `translate(${round(x)} ${round(y)})` },
        s('title', { text: restaurant.name }),
        s('rect', { x: -5, y: -5, width: 10, height: 10, rx: 2 }),
        this.compact ? null : this.label(restaurant.name, x, y),
      );
      this.nodes.restaurants.set(restaurant.id, node);
      this.layers.restaurants.append(node);
    }
  }

  /**
   * A restaurant's name beside its marker: right, left, below or above, whichever first stays inside
   * the map and clear of the labels placed so far (a rough box per label is plenty at this scale).
   */
  label(text, x, y) {
    const width = text.length * 5.8 + 2;
    const candidates = [
      { dx: 8, dy: 3.5, anchor: 'start', box: [x + 8, y - 7, x + 8 + width, y + 4] },
      { dx: -8, dy: 3.5, anchor: 'end', box: [x - 8 - width, y - 7, x - 8, y + 4] },
      { dx: 0, dy: 17, anchor: 'middle', box: [x - width / 2, y + 7, x + width / 2, y + 18] },
      { dx: 0, dy: -9, anchor: 'middle', box: [x - width / 2, y - 19, x + width / 2, y - 8] },
    ];
    const inside = ([left, top, right, bottom]) => left >= 0 && top >= 0 && right <= WIDTH && bottom <= HEIGHT;
    const clear = ([left, top, right, bottom]) =>
      this.labelBoxes.every(([l, t, r, b]) => right < l || left > r || bottom < t || top > b);
    const choice =
      candidates.find((candidate) => inside(candidate.box) && clear(candidate.box)) ||
      candidates.find((candidate) => inside(candidate.box)) ||
      candidates[0];
    this.labelBoxes.push(choice.box);
    return s('text', { x: choice.dx, y: choice.dy, 'text-anchor': choice.anchor, text });
  }

  drawDestinations(destinations) {
    const nodes = this.nodes.destinations;
    for (const [id, node] of nodes) {
      if (!destinations.has(id)) {
        node.remove();
        nodes.delete(id);
      }
    }
    for (const order of destinations.values()) {
      let node = nodes.get(order.id);
      if (!node) {
        const [x, y] = project(order.destination);
        node = s(
          'g',
          { transform: `translate(${round(x)} ${round(y)})` },
          s('title'),
          s('path', { d: 'M0 0 L-4.5 -8 A5.5 5.5 0 1 1 4.5 -8 Z' }),
          s('circle', { cx: 0, cy: -11.2, r: 2, class: 'map-pin-hole' }),
        );
        nodes.set(order.id, node);
        this.layers.destinations.append(node);
      }
      const selected = order.id === this.selected ? ' is-selected' : '';
      node.setAttribute('class', `map-destination status-${order.status}${selected}`);
      node.dataset.orderId = order.id;
      node.querySelector('title').textContent = interpolate(
        gettext('Order #%(id)s: %(address)s'),
        { id: order.id, address: order.delivery_address },
        true,
      );
    }
  }

  drawCouriers(activeCouriers, selectedCourier) {
    const nodes = this.nodes.couriers;
    const now = Date.now();
    const visible = (courier) =>
      activeCouriers.has(courier.id) || (!this.onlyOrderCouriers && now - courier.reportedAt < COURIER_FRESH_MS);
    for (const [id, node] of nodes) {
      const courier = this.couriers.get(id);
      if (!courier || !visible(courier)) {
        node.remove();
        nodes.delete(id);
      }
    }
    for (const courier of this.couriers.values()) {
      if (!visible(courier)) continue;
      const [x, y] = project([courier.lat, courier.lng]);
      let node = nodes.get(courier.id);
      if (!node) {
        node = s(
          'g',
          { class: 'map-courier', dataset: { courierId: courier.id } },
          s('title', { text: courier.name }),
          s('circle', { r: 7 }),
          s('text', { class: 'map-courier-initial', y: 3, text: (courier.name || '?').slice(0, 1) }),
          // Names would crowd the small map: shown for the selected order's courier (and on hover).
          s('text', { class: 'map-courier-name', x: 10, y: 3.5, text: courier.name }),
        );
        // Placed without a transition first; later moves glide (see .map-courier in liveops.css).
        node.style.transform = `translate(${round(x)}px, ${round(y)}px)`;
        nodes.set(courier.id, node);
        this.layers.couriers.append(node);
        requestAnimationFrame(() => node.classList.add('is-placed'));
      } else {
        node.style.transform = `translate(${round(x)}px, ${round(y)}px)`;
      }
      node.classList.toggle('is-selected', courier.id === selectedCourier);
    }
  }

  /** Dashed lines: courier → destination for orders on the road, and every leg of the selected order. */
  drawRoutes(orders) {
    const layer = this.layers.routes;
    layer.replaceChildren();
    for (const order of orders.values()) {
      const selected = order.id === this.selected;
      if (!hasPoint(order.destination) || (TERMINAL.has(order.status) && !selected)) continue;
      const [dx, dy] = project(order.destination);
      const courier = order.courier && this.couriers.get(order.courier.id);
      if (courier && order.status === 'delivering') {
        const [cx, cy] = project([courier.lat, courier.lng]);
        layer.append(s('line', { class: 'map-route is-delivery', x1: round(cx), y1: round(cy), x2: round(dx), y2: round(dy) }));
      }
      if (selected) {
        for (const restaurant of order.restaurants || []) {
          if (!hasPoint(restaurant.location)) continue;
          const [rx, ry] = project(restaurant.location);
          layer.append(s('line', { class: 'map-route is-selected', x1: round(rx), y1: round(ry), x2: round(dx), y2: round(dy) }));
        }
      }
    }
  }
}
