// The balance over time, as a step line: each entry of the history moves the
// balance at its moment, and the balance holds until the next one. Drawn in SVG
// from the history's own strings: amounts become pixel positions only, and the
// labels are the API's own text.

const SVG = "http://www.w3.org/2000/svg";
const MARGIN = { right: 12, top: 16, bottom: 30 };
const CHAR_WIDTH = 7.5; // about, at the labels' 12px
// What an entry did: money in or out, or a hold placed or let go (the balance unmoved).
const CHANGES = { IN: "+", OUT: "−", HOLD: "held ", RELEASE: "released " };

/** Cents of a money string ("15.00") as a BigInt: exact, however large. */
export function cents(money) {
  const [whole, part = ""] = money.split(".");
  return BigInt(whole) * 100n + BigInt((part + "00").slice(0, 2));
}

/**
 * Draws the history (oldest first, at least one entry) into an <svg> of the
 * given width in pixels, so that text keeps its size on any screen. The line
 * starts at 0.00 just before the first entry and runs on past the last, where
 * the balance still is. dateLabel(time, span) writes a moment for the axis.
 */
export function drawChart(svg, { entries, width, dateLabel }) {
  const height = width < 480 ? 200 : 240;
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const points = entries.map((entry) => ({ entry, time: Date.parse(entry.date), cents: cents(entry.balance) }));
  const first = points[0].time;
  const last = points[points.length - 1].time;
  const span = Math.max(last - first, 1);
  const highest = points.reduce((max, p) => (p.cents > max.cents ? p : max), points[0]);
  const top = highest.cents > 0n ? highest.cents : 100n;

  const topLabel = highest.cents > 0n ? highest.entry.balance : "1.00";
  const left = Math.round(16 + topLabel.length * CHAR_WIDTH);
  const right = width - MARGIN.right;
  const bottom = height - MARGIN.bottom;
  const tail = Math.max(12, (right - left) * 0.06); // the balance as it is now
  const end = right - tail;
  const x = (time) => round(left + ((time - first) / span) * (end - left));
  // The share of the top, to a millionth: BigInt keeps it exact until then.
  const y = (c) => round(bottom - (Number((c * 1000000n) / top) / 1000000) * (bottom - MARGIN.top));

  add(svg, "line", { class: "grid", x1: left, y1: MARGIN.top, x2: right, y2: MARGIN.top });
  add(svg, "line", { class: "axis", x1: left, y1: bottom, x2: right, y2: bottom });
  label(svg, left - 8, bottom + 4, "0.00", "end");
  label(svg, left - 8, MARGIN.top + 4, topLabel, "end");
  const from = label(svg, left, height - 8, dateLabel(first, span), "start");
  if (points.length > 1) {
    const to = label(svg, end, height - 8, dateLabel(last, span), "end");
    // On a narrow screen the two moments may not both fit: the first stays.
    if (from.getBBox().x + from.getBBox().width + 8 > to.getBBox().x) to.remove();
  }

  // Along at the old balance to the entry's moment, then up or down to the new one.
  const vertices = [[x(first), y(0n)]];
  for (const point of points) {
    const px = x(point.time);
    vertices.push([px, vertices[vertices.length - 1][1]], [px, y(point.cents)]);
  }
  vertices.push([right, vertices[vertices.length - 1][1]]);
  const line = vertices.map(([vx, vy], i) => `${i ? "L" : "M"}${vx} ${vy}`).join(" ");
  add(svg, "path", { class: "area", d: `${line} L${right} ${bottom} L${x(first)} ${bottom} Z` });
  add(svg, "path", { class: "line", d: line });

  for (const point of points) {
    const { entry } = point;
    const dot = add(svg, "circle", {
      class: `point ${entry.type.toLowerCase()}`,
      cx: x(point.time),
      cy: y(point.cents),
      r: 4,
      "data-id": entry.id,
      "data-date": entry.date,
      "data-balance": entry.balance,
    });
    add(dot, "title", {}).textContent = `${dateLabel(point.time, 0)}: ${CHANGES[entry.type] ?? ""}${entry.amount}, balance ${entry.balance}`;
  }
}

function round(value) {
  return Math.round(value * 10) / 10;
}

function label(svg, x, y, text, anchor) {
  const element = add(svg, "text", { x, y, "text-anchor": anchor, class: "label" });
  element.textContent = text;
  return element;
}

function add(parent, name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) {
    element.setAttribute(key, String(value));
  }
  parent.append(element);
  return element;
}
