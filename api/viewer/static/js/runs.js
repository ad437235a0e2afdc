// The runs page: executions newest first, filtered by status and workflow, paged.
// The filters and the page live in the address, so a view can be shared or reloaded.
import { api } from "./api.js";
import { start } from "./shell.js";
import { duration, el, micros, money, time, tokens } from "./format.js";
import { NODE_STATES } from "./run-state.js";

const STATUSES = ["pending", "running", "waiting", "completed", "failed", "cancelled"];
const PAGE_SIZE = 20;

function badge(status) {
  const look = NODE_STATES[status] || { icon: "", label: status };
  return el("span", { class: `badge ${status}` }, `${look.icon} ${look.label}`);
}

function runDuration(execution) {
  if (!execution.started_at) return "";
  const end = execution.finished_at ? Date.parse(execution.finished_at) : Date.now();
  return duration(end - Date.parse(execution.started_at));
}

start(async () => {
  const query = new URLSearchParams(location.search);
  const page = Math.max(1, Number(query.get("page")) || 1);
  const filters = { status: query.get("status") || "", workflow_id: query.get("workflow_id") || "" };
  const params = new URLSearchParams({ page, page_size: PAGE_SIZE });
  for (const [name, value] of Object.entries(filters)) if (value) params.set(name, value);
  const [list, workflows] = await Promise.all([
    api(`/Execution/?${params}`),
    api("/Workflow/?page_size=100").catch(() => ({ items: [] })),
  ]);
  const names = new Map(workflows.items.map((w) => [w.id, w.name]));

  const go = (changes) => {
    const next = new URLSearchParams({ ...filters, page, ...changes });
    for (const [name, value] of [...next]) if (!value || (name === "page" && value === "1")) next.delete(name);
    location.search = next.toString();
  };
  const statusSelect = el("select", { id: "filter-status", onchange: (e) => go({ status: e.target.value, page: 1 }) },
    el("option", { value: "" }, "any status"),
    STATUSES.map((s) => el("option", { value: s, selected: s === filters.status }, s)));
  const workflowSelect = el("select", { id: "filter-workflow", onchange: (e) => go({ workflow_id: e.target.value, page: 1 }) },
    el("option", { value: "" }, "any workflow"),
    workflows.items.map((w) => el("option", { value: w.id, selected: String(w.id) === filters.workflow_id }, w.name)));

  const rows = list.items.map((execution) => {
    const href = `/runs/${execution.id}`;
    const usage = execution.usage;
    const row = el("tr", { "data-execution": execution.id, class: "clickable" },
      el("th", { scope: "row" }, el("a", { href }, `#${execution.id}`)),
      el("td", {}, badge(execution.status)),
      el("td", {}, `${names.get(execution.workflow_id) || `workflow ${execution.workflow_id}`} `,
        el("span", { class: "muted" }, `v${execution.workflow_version}`)),
      el("td", {}, time(execution.started_at || execution.created_at)),
      el("td", { class: "num" }, runDuration(execution)),
      el("td", { class: "num" }, tokens(usage.prompt_tokens + usage.completion_tokens)),
      el("td", { class: "num" }, money(micros(usage.cost_usd))));
    row.addEventListener("click", (event) => {
      if (!event.target.closest("a")) location.assign(href);
    });
    return row;
  });
  const pages = Math.max(1, Math.ceil(list.total / PAGE_SIZE));
  const table = rows.length
    ? el("table", { class: "runs" },
      el("caption", { class: "visually-hidden" }, "Executions, newest first"),
      el("thead", {}, el("tr", {}, ["Run", "Status", "Workflow", "Started", "Duration", "Tokens", "Cost"]
        .map((h, i) => el("th", { scope: "col", class: i >= 4 ? "num" : null }, h)))),
      el("tbody", {}, rows))
    : el("p", { class: "empty" }, "No runs match these filters.");
  document.getElementById("main").replaceChildren(
    el("header", { class: "list-head" }, el("h1", {}, "Runs"),
      el("form", { class: "filters", "aria-label": "Filters", onsubmit: (e) => e.preventDefault() },
        el("label", { for: "filter-status" }, "Status"), statusSelect,
        el("label", { for: "filter-workflow" }, "Workflow"), workflowSelect)),
    table,
    el("nav", { class: "pager", "aria-label": "Pages" },
      el("button", { type: "button", disabled: page <= 1, onclick: () => go({ page: page - 1 }) }, "← Newer"),
      el("span", { id: "page-info" }, `Page ${page} of ${pages} · ${list.total} runs`),
      el("button", { type: "button", disabled: page >= pages, onclick: () => go({ page: page + 1 }) }, "Older →")));
});
