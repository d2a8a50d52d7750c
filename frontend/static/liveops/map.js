'use strict';
/**
 * The street map every page shares: restaurants, customers' doors and couriers on Leaflet (global `L`,
 * vendored with leaflet.markercluster and loaded by the page before its module).
 *
 * Tiles come from the page's `map-config` (settings.MAP_TILE_URL). Without a tile URL, or when the tile
 * server cannot be reached at all, the map keeps working on a plain gridded background with a note, so
 * an air-gapped demo still reads. Markers are Leaflet divIcons styled by liveops.css; on the dashboard
 * they cluster (L.markerClusterGroup) so a hundred orders stay readable in a small panel.
 *
 * Server text reaches the map only as DOM nodes built with `h` (textContent): popups get nodes, never
 * HTML strings. The one HTML string is the tile attribution, which comes from settings.
 */
import {
  TERMINAL,
  formatAgo,
  formatCountdown,
  formatWhen,
  gettext,
  h,
  interpolate,
  ngettext,
  readJSON,
  telHref,
} from './util.js';

export const KYIV = [50.45, 30.52];
const DEFAULT_ZOOM = 12;
const FIT_MAX_ZOOM = 15;
const FOCUS_ZOOM = 16;
const MAX_ZOOM = 19;
// A courier without an active order stays on the map (and in the couriers panel) this long after
// their last report.
export const COURIER_SHOWN_MS = 10 * 60_000;
const TRAIL_LENGTH = 20;

export const hasPoint = (point) => Array.isArray(point) && Number.isFinite(point[0]) && Number.isFinite(point[1]);
const courierPoint = (courier) =>
  courier && Number.isFinite(courier.lat) && Number.isFinite(courier.lng) ? [courier.lat, courier.lng] : null;

/** A phone number as a `tel:` link, or nothing when there is none. */
export function phoneLink(phone, attrs = {}) {
  const number = (phone || '').trim();
  if (!number) return null;
  return h('a', { href: telHref(number), class: 'phone-link', ...attrs, text: number });
}

export class LiveMap {
  /**
   * @param {HTMLElement} element  an empty <div data-testid="map">
   * @param {object} options  compact: a small map with few markers (tracking and courier pages), no
   *   clustering; onOpen(orderId, opener): what an order's button in a popup does (none: plain text)
   */
  constructor(element, { compact = false, onOpen = null } = {}) {
    this.element = element;
    this.compact = compact;
    this.onOpen = onOpen;
    this.selected = null;
    this.orders = new Map();
    this.onlyOrderCouriers = false;
    this.labels = readJSON('liveops-labels', {});
    this.couriers = new Map(); // id → {id, name, phone, lat, lng, at, reportedAt}
    this.trails = new Map(); // courier id → [[lat, lng], ...], oldest first
    this.markers = { restaurants: new Map(), destinations: new Map(), couriers: new Map() };
    this.fitted = false;

    element.classList.add('map');
    // maxZoom set here: without tiles no layer sets it, and clustering needs a finite one.
    this.map = L.map(element, { center: KYIV, zoom: DEFAULT_ZOOM, minZoom: 3, maxZoom: MAX_ZOOM });
    this.addTiles(readJSON('map-config', {}));
    const group = () =>
      compact
        ? L.featureGroup()
        : L.markerClusterGroup({ maxClusterRadius: 40, showCoverageOnHover: false, spiderfyOnMaxZoom: true });
    this.trailLayer = L.layerGroup().addTo(this.map);
    this.routeLayer = L.layerGroup().addTo(this.map);
    this.places = group().addTo(this.map); // restaurants and destinations
    this.courierLayer = group().addTo(this.map);
    this.moving = false;
    this.map.on('movestart', () => {
      this.moving = true;
    });
    this.map.on('moveend', () => {
      this.moving = false;
    });
    this.addFitControl();
    // Leaflet focuses the map on a press (for its keyboard controls) with a plain focus(), which scrolls
    // a scrolling page area (the dashboard's) to show the whole map: the marker under the pointer moves
    // away between press and release and the click is lost. Focusing first, without scrolling, spares it.
    element.addEventListener(
      'mousedown',
      () => {
        if (document.activeElement !== element) element.focus({ preventScroll: true });
      },
      true,
    );
    // The element may be sized (or unfolded from a hidden panel) after Leaflet measured it.
    new ResizeObserver(() => {
      this.map.invalidateSize();
      if (!this.fitted) this.fitted = this.fit();
    }).observe(element);
  }

  addTiles(config) {
    if (!config.tile_url) {
      this.tilesOff();
      return;
    }
    const tiles = L.tileLayer(config.tile_url, { attribution: config.attribution || '', maxZoom: MAX_ZOOM });
    let loaded = false;
    tiles.on('tileload', () => {
      loaded = true;
    });
    // Not one tile ever arrived: no tile server from here. A later failure is a gap, not an outage.
    tiles.on('tileerror', () => {
      if (!loaded) this.tilesOff(tiles);
    });
    tiles.addTo(this.map);
  }

  tilesOff(tiles = null) {
    if (this.element.classList.contains('is-tileless')) return;
    if (tiles) this.map.removeLayer(tiles);
    this.element.classList.add('is-tileless');
    const note = L.control({ position: 'bottomleft' });
    note.onAdd = () => h('p', { class: 'map-note', dataset: { testid: 'map-tiles-off' }, text: gettext('Map tiles are off') });
    note.addTo(this.map);
  }

  addFitControl() {
    const control = L.control({ position: 'topleft' });
    control.onAdd = () => {
      const button = h('button', {
        type: 'button',
        class: 'map-fit',
        dataset: { testid: 'map-fit' },
        title: gettext('Show everything on the map'),
        text: gettext('Fit'),
      });
      L.DomEvent.disableClickPropagation(button);
      // Leaflet ignores a new view while a zoom is under way: then the fit waits for its end.
      button.addEventListener('click', () => {
        if (this.moving) this.map.once('moveend', () => this.fit({ animate: true }));
        else this.fit({ animate: true });
      });
      return h('div', { class: 'leaflet-bar' }, button);
    };
    control.addTo(this.map);
  }

  /**
   * Redraws everything the orders imply; called per frame batch. `onlyOrderCouriers`: show only the
   * couriers of these orders (the board is filtered), not every courier that reported lately.
   */
  render(orders, { onlyOrderCouriers = false } = {}) {
    this.orders = orders;
    this.onlyOrderCouriers = onlyOrderCouriers;
    const restaurants = new Map(); // id → {restaurant, orders: [active orders]}
    const destinations = new Map();
    const carried = new Map(); // courier id → [active orders]
    for (const order of orders.values()) {
      if (order.courier) this.updateCourier(order.courier, false);
      const active = !TERMINAL.has(order.status);
      for (const restaurant of order.restaurants || []) {
        if (!hasPoint(restaurant.location)) continue;
        const entry = restaurants.get(restaurant.id) || { restaurant, orders: [] };
        if (active) entry.orders.push(order);
        restaurants.set(restaurant.id, entry);
      }
      if (!active && order.id !== this.selected) continue;
      if (hasPoint(order.destination)) destinations.set(order.id, order);
      if (order.courier && active) {
        if (!carried.has(order.courier.id)) carried.set(order.courier.id, []);
        carried.get(order.courier.id).push(order);
      }
    }
    this.carried = carried;
    this.drawRestaurants(restaurants);
    this.drawDestinations(destinations);
    this.drawCouriers(carried);
    this.drawRoutes(orders);
    this.refreshPopup();
    if (!this.fitted && this.fit()) this.fitted = true;
  }

  /**
   * A courier position from an order payload or a locations frame (`reported`); an older report never
   * wins. Reports also extend the courier's trail.
   */
  updateCourier(courier, reported) {
    const point = courierPoint(courier);
    if (!point) return;
    const known = this.couriers.get(courier.id);
    if (known && known.at && courier.at && Date.parse(courier.at) < Date.parse(known.at)) return;
    const reportedAt = reported ? Date.now() : known ? known.reportedAt : 0;
    // A locations frame may lack what the order payload had (the phone): keep what is known.
    this.couriers.set(courier.id, { ...known, ...courier, reportedAt });
    const trail = this.trails.get(courier.id) || [];
    const last = trail[trail.length - 1];
    if (!last || last[0] !== point[0] || last[1] !== point[1]) {
      trail.push(point);
      if (trail.length > TRAIL_LENGTH) trail.shift();
      this.trails.set(courier.id, trail);
    }
  }

  moveCouriers(couriers, orders) {
    for (const courier of couriers) this.updateCourier(courier, true);
    this.render(orders, { onlyOrderCouriers: this.onlyOrderCouriers });
  }

  select(orderId, orders) {
    this.selected = orderId;
    this.render(orders);
  }

  /** Couriers worth listing: carrying an order here, or reporting lately. Read by the couriers panel. */
  activeCouriers(now = Date.now()) {
    return [...this.couriers.values()]
      .filter((courier) => (this.carried && this.carried.has(courier.id)) || now - courier.reportedAt < COURIER_SHOWN_MS)
      .map((courier) => ({ ...courier, orders: (this.carried && this.carried.get(courier.id)) || [] }));
  }

  // --- markers -------------------------------------------------------------------------------------------

  /**
   * Brings one kind of marker in line with `wanted` (id → item): removes the gone, adds the new, and
   * swaps the icon of those whose look (`looks(item)`, a string) changed.
   */
  sync(kind, layer, wanted, { point, looks, icon, popup }) {
    const markers = this.markers[kind];
    for (const [id, marker] of markers) {
      if (!wanted.has(id)) {
        layer.removeLayer(marker);
        markers.delete(id);
      }
    }
    for (const [id, item] of wanted) {
      const look = looks(item);
      let marker = markers.get(id);
      if (!marker) {
        marker = L.marker(point(item), { icon: icon(item), riseOnHover: true });
        marker.look = look;
        marker.bindPopup(() => popup(id), { maxWidth: 280, minWidth: 180, autoPanPadding: [12, 12] });
        markers.set(id, marker);
        layer.addLayer(marker);
        continue;
      }
      const [lat, lng] = point(item);
      const at = marker.getLatLng();
      if (at.lat !== lat || at.lng !== lng) marker.setLatLng([lat, lng]);
      if (marker.look !== look) {
        marker.look = look;
        marker.setIcon(icon(item));
      }
    }
  }

  drawRestaurants(restaurants) {
    this.restaurantOrders = restaurants;
    this.sync('restaurants', this.places, restaurants, {
      point: ({ restaurant }) => restaurant.location,
      looks: ({ restaurant, orders }) => `${restaurant.name}|${orders.length > 0}`,
      icon: ({ restaurant, orders }) =>
        L.divIcon({
          className: 'map-marker',
          html: h('span', {
            class: `map-restaurant${orders.length ? ' is-busy' : ''}`,
            title: restaurant.name,
            dataset: { restaurantId: restaurant.id },
          }),
          iconSize: [16, 16],
          iconAnchor: [8, 8],
          popupAnchor: [0, -8],
        }),
      popup: (id) => this.restaurantPopup(id),
    });
  }

  drawDestinations(destinations) {
    this.sync('destinations', this.places, destinations, {
      point: (order) => order.destination,
      looks: (order) => `${order.status}|${order.id === this.selected}`,
      icon: (order) =>
        L.divIcon({
          className: 'map-marker',
          html: h('span', {
            class: `map-destination status-${order.status}${order.id === this.selected ? ' is-selected' : ''}`,
            title: interpolate(gettext('Order #%(id)s: %(address)s'), { id: order.id, address: order.delivery_address }, true),
            dataset: { orderId: order.id, status: order.status },
          }),
          iconSize: [18, 18],
          iconAnchor: [9, 21],
          popupAnchor: [0, -20],
        }),
      popup: (id) => this.orderPopup(id),
    });
  }

  drawCouriers(carried) {
    const now = Date.now();
    const selectedOrder = this.selected !== null && this.orders.get(this.selected);
    const selectedCourier = selectedOrder && selectedOrder.courier ? selectedOrder.courier.id : null;
    const shown = new Map();
    for (const courier of this.couriers.values()) {
      const fresh = !this.onlyOrderCouriers && now - courier.reportedAt < COURIER_SHOWN_MS;
      if (carried.has(courier.id) || courier.id === selectedCourier || fresh) shown.set(courier.id, courier);
    }
    this.sync('couriers', this.courierLayer, shown, {
      point: (courier) => courierPoint(courier),
      looks: (courier) => `${courier.name}|${carried.has(courier.id)}|${courier.id === selectedCourier}`,
      icon: (courier) =>
        L.divIcon({
          className: 'map-marker',
          html: h('span', {
            class:
              'map-courier' +
              (carried.has(courier.id) ? ' is-carrying' : ' is-free') +
              (courier.id === selectedCourier ? ' is-selected' : ''),
            title: courier.name,
            dataset: { courierId: courier.id },
            text: (courier.name || '?').trim().slice(0, 1).toUpperCase(),
          }),
          iconSize: [24, 24],
          iconAnchor: [12, 12],
          popupAnchor: [0, -12],
        }),
      popup: (id) => this.courierPopup(id),
    });
    this.trailLayer.clearLayers();
    for (const id of shown.keys()) {
      const trail = this.trails.get(id);
      if (trail && trail.length > 1) {
        this.trailLayer.addLayer(L.polyline(trail, { className: 'map-trail', interactive: false }));
      }
    }
  }

  /** Courier → door for orders on the road; the selected order's whole way: pickups, door, courier. */
  drawRoutes(orders) {
    this.routeLayer.clearLayers();
    for (const order of orders.values()) {
      const selected = order.id === this.selected;
      if (TERMINAL.has(order.status) && !selected) continue;
      const courier = order.courier && courierPoint(this.couriers.get(order.courier.id));
      const pickups = (order.restaurants || []).map((restaurant) => restaurant.location).filter(hasPoint);
      const door = hasPoint(order.destination) ? order.destination : null;
      if (selected) {
        const way = door ? [...pickups, door] : pickups;
        if (way.length > 1) this.routeLayer.addLayer(L.polyline(way, { className: 'map-route is-selected', interactive: false }));
        const next = order.status === 'delivering' ? door : pickups[0] || door;
        if (courier && next && !TERMINAL.has(order.status)) {
          this.routeLayer.addLayer(L.polyline([courier, next], { className: 'map-route is-courier', interactive: false }));
        }
      } else if (courier && door && order.status === 'delivering') {
        this.routeLayer.addLayer(L.polyline([courier, door], { className: 'map-route is-delivery', interactive: false }));
      }
    }
  }

  // --- view ------------------------------------------------------------------------------------------------

  /**
   * Zooms to what is shown (restaurants, doors, couriers); false when there is nothing to show. The
   * first fit jumps (nothing to follow yet); the Fit button glides.
   */
  fit({ animate = false } = {}) {
    const size = this.map.getSize();
    if (!size.x || !size.y) return false; // folded away: fitted once it is shown
    const points = [];
    for (const markers of Object.values(this.markers)) {
      for (const marker of markers.values()) points.push(marker.getLatLng());
    }
    if (!points.length) return false;
    this.map.fitBounds(L.latLngBounds(points), { padding: [24, 24], maxZoom: FIT_MAX_ZOOM, animate });
    return true;
  }

  /** Pans and zooms to a courier and opens their popup; false when the map has no position for them. */
  focusCourier(courierId) {
    return this.focus(this.markers.couriers.get(courierId), this.courierLayer);
  }

  focusOrder(orderId) {
    return this.focus(this.markers.destinations.get(orderId), this.places);
  }

  focus(marker, layer) {
    if (!marker) return false;
    if (typeof layer.zoomToShowLayer === 'function') {
      // Zooms into (or spiderfies) the marker's cluster, or pans when the marker is already shown;
      // the popup opens once the marker is on the map.
      layer.zoomToShowLayer(marker, () => marker.openPopup());
    } else {
      this.map.setView(marker.getLatLng(), Math.max(this.map.getZoom(), FOCUS_ZOOM));
      marker.openPopup();
    }
    return true;
  }

  // --- popups ---------------------------------------------------------------------------------------------

  /** An open popup follows the data; rebuilt only when its content would change (a click may be under way). */
  refreshPopup() {
    for (const markers of Object.values(this.markers)) {
      for (const marker of markers.values()) {
        const popup = marker.getPopup();
        if (!marker.isPopupOpen() || !popup) continue;
        const node = popup.getContent()(marker);
        if (node.textContent !== popup.getElement().querySelector('.leaflet-popup-content').textContent) {
          popup.setContent(popup.getContent());
        }
      }
    }
  }

  orderButton(order) {
    const text = interpolate(gettext('Order #%s'), [order.id]);
    if (!this.onOpen) return h('strong', { text });
    return h('button', {
      type: 'button',
      class: 'link-button map-order-link',
      dataset: { orderId: order.id },
      text,
      onclick: (event) => this.onOpen(order.id, event.currentTarget),
    });
  }

  statusPill(order) {
    return h('span', { class: `status-pill status-${order.status}`, text: this.labels[order.status] || order.status });
  }

  orderPopup(orderId) {
    const order = this.orders.get(orderId);
    if (!order) return h('div', { class: 'map-popup', text: gettext('This order is no longer shown.') });
    const courier = order.courier;
    let promise = null;
    if (order.promised_at && !TERMINAL.has(order.status)) {
      const countdown = formatCountdown(order.promised_at);
      promise = h(
        'p',
        { class: `map-popup-promise${countdown.late ? ' is-late' : ''}` },
        interpolate(gettext('Promised %(time)s (%(countdown)s)'), { time: formatWhen(order.promised_at), countdown: countdown.text }, true),
      );
    }
    return h(
      'div',
      { class: 'map-popup', dataset: { testid: 'map-popup', orderId: order.id } },
      h('p', { class: 'map-popup-head' }, this.orderButton(order), ' ', this.statusPill(order)),
      promise,
      h('p', { class: 'map-popup-address', text: order.delivery_address }),
      courier
        ? h(
            'p',
            { class: 'map-popup-courier' },
            h('span', { text: interpolate(gettext('Courier: %s'), [courier.name]) }),
            ' ',
            phoneLink(courier.phone),
          )
        : h('p', { class: 'muted', text: gettext('No courier yet') }),
    );
  }

  restaurantPopup(restaurantId) {
    const entry = this.restaurantOrders && this.restaurantOrders.get(restaurantId);
    if (!entry) return h('div', { class: 'map-popup' });
    const { restaurant, orders } = entry;
    return h(
      'div',
      { class: 'map-popup', dataset: { testid: 'map-popup', restaurantId } },
      h('p', { class: 'map-popup-head' }, h('strong', { text: restaurant.name })),
      restaurant.address ? h('p', { class: 'map-popup-address', text: restaurant.address }) : null,
      orders.length
        ? h(
            'ul',
            { class: 'map-popup-orders', 'aria-label': gettext('Active orders') },
            orders.map((order) => h('li', {}, this.orderButton(order), ' ', this.statusPill(order))),
          )
        : h('p', { class: 'muted', text: gettext('No active orders') }),
    );
  }

  courierPopup(courierId) {
    const courier = this.couriers.get(courierId);
    if (!courier) return h('div', { class: 'map-popup' });
    const orders = (this.carried && this.carried.get(courierId)) || [];
    return h(
      'div',
      { class: 'map-popup', dataset: { testid: 'map-popup', courierId } },
      h('p', { class: 'map-popup-head' }, h('strong', { text: courier.name }), ' ', phoneLink(courier.phone)),
      courier.at
        ? h('p', { class: 'muted', text: interpolate(gettext('Last seen %s'), [formatAgo(courier.at)]) })
        : null,
      orders.length
        ? h(
            'div',
            {},
            h('p', {
              text: interpolate(ngettext('Carrying %s order:', 'Carrying %s orders:', orders.length), [orders.length]),
            }),
            h(
              'ul',
              { class: 'map-popup-orders' },
              orders.map((order) => h('li', {}, this.orderButton(order), ' ', this.statusPill(order))),
            ),
          )
        : h('p', { text: gettext('Free: no order right now') }),
    );
  }
}
