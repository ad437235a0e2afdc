// The run's graph as SVG: laid out top to bottom by dagre (parallel branches side by side,
// joins below them, loops drawn back), each node showing its state by colour and by icon and
// text, with pan and zoom (mouse, touch, keyboard and buttons) for graphs of any size.
import dagre from "../vendor/dagre/dagre.esm.js";
import { NODE_STATES } from "./run-state.js";

const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 200;
const NODE_H = 74;
const TERMINAL = 34;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/** Every edge the definition draws: plain edges, condition routes and reject routes. */
function edgesOf(definition) {
  const edges = (definition.edges || []).map((e) => ({ from: e.from, to: e.to, kind: "flow", label: "" }));
  for (const node of definition.nodes || []) {
    if (node.type === "condition") {
      for (const route of node.routes || []) edges.push({ from: node.id, to: route.to, kind: "route", label: "when" });
      if (node.default) edges.push({ from: node.id, to: node.default, kind: "route", label: "else" });
    }
    if (node.type === "human" && node.on_reject) {
      edges.push({ from: node.id, to: node.on_reject, kind: "route", label: "reject" });
    }
  }
  return edges;
}

export function layout(definition) {
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: "TB", nodesep: 36, ranksep: 44, edgesep: 16, marginx: 24, marginy: 24 });
  g.setDefaultEdgeLabel(() => ({}));
  const edges = edgesOf(definition);
  const used = new Set(edges.flatMap((e) => [e.from, e.to]));
  for (const end of ["START", "END"]) if (used.has(end)) g.setNode(end, { width: TERMINAL * 2, height: TERMINAL });
  for (const node of definition.nodes || []) g.setNode(node.id, { width: NODE_W, height: NODE_H });
  edges.forEach((edge, i) => {
    if (!g.hasNode(edge.from) || !g.hasNode(edge.to)) return;
    g.setEdge(edge.from, edge.to, { label: edge.label, width: edge.label ? 36 : 0, height: edge.label ? 14 : 0 }, String(i));
  });
  dagre.layout(g);
  return {
    width: g.graph().width, height: g.graph().height,
    nodes: g.nodes().map((id) => ({ id, ...g.node(id) })),
    edges: g.edges().map((key) => ({ ...edges[Number(key.name)], points: g.edge(key).points, labelAt: g.edge(key) })),
  };
}

function edgePath(points) {
  const [first, ...rest] = points;
  return `M${first.x},${first.y} ` + rest.map((p) => `L${p.x},${p.y}`).join(" ");
}

/** Draw the graph into `container`; onSelect(id) when a node is clicked or chosen by keyboard. */
export function drawGraph(container, definition, { onSelect }) {
  const shape = layout(definition);
  const y = new Map(shape.nodes.map((n) => [n.id, n.y]));
  const viewport = svg("g", { class: "viewport" });
  const root = svg("svg", { class: "graph", role: "group", "aria-label": "Workflow graph", tabindex: "0" },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5",
      markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, svg("path", { d: "M0,0 L10,5 L0,10 z" }))),
    viewport);
  for (const edge of shape.edges) {
    const loop = y.get(edge.to) <= y.get(edge.from);
    const kind = loop ? "loop" : edge.kind;
    viewport.append(svg("path", { class: `edge ${kind}`, d: edgePath(edge.points), "marker-end": "url(#arrow)" }));
    const label = loop ? "loop" : edge.label;
    if (label) viewport.append(svg("text", { class: "edge-label", x: edge.labelAt.x, y: edge.labelAt.y + 4 }, label));
  }
  const views = new Map();
  for (const n of shape.nodes) {
    if (n.id === "START" || n.id === "END") {
      viewport.append(svg("g", { class: "terminal", transform: `translate(${n.x},${n.y})` },
        svg("rect", { x: -TERMINAL, y: -TERMINAL / 2, width: TERMINAL * 2, height: TERMINAL, rx: TERMINAL / 2 }),
        svg("text", { y: 4 }, n.id.toLowerCase())));
      continue;
    }
    const type = (definition.nodes.find((d) => d.id === n.id) || {}).type || "?";
    const state = svg("text", { class: "state", x: -NODE_W / 2 + 12, y: 3 });
    const metrics = svg("text", { class: "metrics", x: -NODE_W / 2 + 12, y: 24 });
    const group = svg("g", { class: "node pending", "data-node": n.id, transform: `translate(${n.x},${n.y})`,
      tabindex: "0", role: "button" },
      svg("rect", { x: -NODE_W / 2, y: -NODE_H / 2, width: NODE_W, height: NODE_H, rx: 8 }),
      svg("rect", { class: "band", x: -NODE_W / 2, y: -NODE_H / 2, width: 6, height: NODE_H, rx: 3 }),
      svg("text", { class: "title", x: -NODE_W / 2 + 12, y: -NODE_H / 2 + 20 }, n.id.length > 22 ? `${n.id.slice(0, 21)}…` : n.id),
      svg("text", { class: "type", x: NODE_W / 2 - 10, y: -NODE_H / 2 + 20, "text-anchor": "end" }, type),
      state, metrics);
    group.addEventListener("click", () => onSelect(n.id));
    group.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        onSelect(n.id);
      }
    });
    viewport.append(group);
    views.set(n.id, { group, state, metrics });
  }
  container.replaceChildren(root);
  const camera = panZoom(root, viewport, shape);
  for (const [id, view] of views) {
    // Tabbing through a big graph brings the focused node into view; a click does not move it.
    view.group.addEventListener("focus", () => {
      if (view.group.matches(":focus-visible")) camera.show(id);
    });
  }
  return {
    camera,
    /** Show a node's state: class (colour) plus icon and word (text), and its metrics line. */
    update(id, stateName, metricsText, selected) {
      const view = views.get(id);
      if (!view) return;
      const look = NODE_STATES[stateName] || NODE_STATES.pending;
      view.group.setAttribute("class", `node ${stateName}${selected ? " selected" : ""}`);
      view.state.textContent = `${look.icon} ${look.label}`;
      view.metrics.textContent = metricsText;
      view.group.setAttribute("aria-label", `${id}: ${look.label}. ${metricsText}`);
      view.group.setAttribute("aria-pressed", selected ? "true" : "false");
    },
  };
}

function panZoom(root, viewport, shape) {
  let scale = 1;
  let x = 0;
  let y = 0;
  const apply = () => viewport.setAttribute("transform", `translate(${x},${y}) scale(${scale})`);
  const zoomAt = (factor, px, py) => {
    const next = Math.min(3, Math.max(0.05, scale * factor));
    x = px - ((px - x) * next) / scale;
    y = py - ((py - y) * next) / scale;
    scale = next;
    apply();
  };
  const centre = () => [root.clientWidth / 2, root.clientHeight / 2];
  const fit = () => {
    const w = root.clientWidth || 800;
    const h = root.clientHeight || 600;
    scale = Math.min(1, w / shape.width, h / shape.height); // never larger than life
    if (scale < 0.35) scale = Math.min(1, w / shape.width, 0.6); // big graphs: readable, then pan
    x = (w - shape.width * scale) / 2;
    y = Math.max(0, (h - shape.height * scale) / 2);
    if (shape.width * scale > w) x = 0;
    apply();
  };
  root.addEventListener("wheel", (event) => {
    event.preventDefault();
    const box = root.getBoundingClientRect();
    zoomAt(event.deltaY < 0 ? 1.15 : 1 / 1.15, event.clientX - box.left, event.clientY - box.top);
  }, { passive: false });
  let drag = null;
  root.addEventListener("pointerdown", (event) => {
    if (event.target.closest(".node")) return;
    drag = { px: event.clientX, py: event.clientY, x, y };
    root.setPointerCapture(event.pointerId);
  });
  root.addEventListener("pointermove", (event) => {
    if (!drag) return;
    x = drag.x + event.clientX - drag.px;
    y = drag.y + event.clientY - drag.py;
    apply();
  });
  root.addEventListener("pointerup", () => { drag = null; });
  root.addEventListener("keydown", (event) => {
    const step = 60;
    const moves = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (event.target !== root) return;
    if (moves[event.key]) {
      [x, y] = [x + moves[event.key][0], y + moves[event.key][1]];
      apply();
    } else if (event.key === "+" || event.key === "=") zoomAt(1.25, ...centre());
    else if (event.key === "-") zoomAt(1 / 1.25, ...centre());
    else if (event.key === "0") fit();
    else return;
    event.preventDefault();
  });
  fit();
  return {
    zoomIn: () => zoomAt(1.25, ...centre()),
    zoomOut: () => zoomAt(1 / 1.25, ...centre()),
    fit,
    /** Bring a node into view (keyboard users tabbing through a big graph). */
    show(id) {
      const n = shape.nodes.find((m) => m.id === id);
      if (!n) return;
      const [cx, cy] = centre();
      x = cx - n.x * scale;
      y = cy - n.y * scale;
      apply();
    },
  };
}
