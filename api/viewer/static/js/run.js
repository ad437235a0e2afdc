// The run page: header, live graph (or list), the selected node's details, the event log,
// and the actions the caller's role allows. Actions only send requests: what they did shows
// up when the event stream says so.
import { api } from "./api.js";
import { allows } from "./auth.js";
import { drawGraph } from "./graph.js";
import { apply, elapsedMs, FINISHED, mergeRecord, newRun, NODE_STATES } from "./run-state.js";
import { showMessage, start } from "./shell.js";
import { watch } from "./stream.js";
import { duration, el, json, micros, money, time, tokens } from "./format.js";

const MAX_LOG_ROWS = 1000;

function badge(state) {
  const look = NODE_STATES[state] || { icon: "", label: state };
  return el("span", { class: `badge ${state}` }, `${look.icon} ${look.label}`);
}

function nodeMetrics(node, now) {
  const parts = [];
  const ms = elapsedMs(node, now);
  if (node.fromExecution) parts.push(`from run #${node.fromExecution}`);
  else if (ms !== null) parts.push(duration(ms));
  if (node.attempts > 1) parts.push(`${node.attempts} tries`);
  const used = node.promptTokens + node.completionTokens;
  if (used) parts.push(tokens(used));
  if (node.costMicros) parts.push(money(node.costMicros));
  return parts.join(" · ");
}

class RunPage {
  constructor(execution, definition, workflow, budget, canAct) {
    this.execution = execution;
    this.run = newRun(execution, definition);
    this.workflow = workflow;
    this.budget = budget;
    this.canAct = canAct;
    this.selected = null;
    this.detailsKey = null;
    this.logged = 0;
    this.streamState = "connecting";
    this.build(definition);
    this.stream = watch(execution.id, {
      lastSeq: () => this.run.lastSeq,
      isFinished: () => FINISHED.has(this.run.status),
      onEvent: (event) => this.onEvent(event),
      onState: (state, detail) => this.onStreamState(state, detail),
    });
    setInterval(() => this.schedule(), 1000);
    this.schedule();
  }

  build(definition) {
    const run = this.run;
    const name = this.workflow?.name || `workflow ${this.execution.workflow_id}`;
    const parent = this.execution.parent_execution_id;
    this.statusBadge = el("span", { id: "run-status" });
    this.facts = {
      tokens: el("dd", { id: "run-tokens" }), cost: el("dd", { id: "run-cost" }),
      started: el("dd", {}), elapsed: el("dd", { id: "run-elapsed" }), stream: el("dd", { id: "stream-state" }),
    };
    const budgetLeft = this.budget?.workspace?.remaining_usd;
    this.cancelBox = el("div", { class: "cancel-box" });
    this.notice = el("p", { id: "notice", role: "status", "aria-live": "polite" });
    const temporalUrl = this.execution.temporal?.ui_url;
    const header = el("header", { class: "run-head" },
      el("div", { class: "title-row" },
        el("h1", {}, `Run #${run.id}`), this.statusBadge,
        el("span", { class: "subtitle" }, `${name} · version ${this.execution.workflow_version}`,
          parent ? [" · rerun of ", el("a", { href: `/runs/${parent}` }, `#${parent}`)] : null)),
      el("dl", { class: "facts" },
        el("div", {}, el("dt", {}, "Tokens"), this.facts.tokens),
        el("div", {}, el("dt", {}, "Cost"), this.facts.cost),
        budgetLeft != null ? el("div", {}, el("dt", {}, "Budget left"), el("dd", { id: "budget-left" }, `$${budgetLeft}`)) : null,
        el("div", {}, el("dt", {}, "Started"), this.facts.started),
        el("div", {}, el("dt", {}, "Elapsed"), this.facts.elapsed),
        el("div", {}, el("dt", {}, "Live"), this.facts.stream)),
      el("div", { class: "head-actions" },
        temporalUrl ? el("a", { class: "button quiet", href: temporalUrl, target: "_blank", rel: "noopener" },
          "Temporal UI ↗") : null,
        this.cancelBox),
      this.notice);

    const graphBox = el("div", { id: "graph", class: "graph-box" });
    this.listBox = el("div", { id: "node-list", class: "node-list", hidden: true });
    this.details = el("aside", { id: "details", class: "details", "aria-label": "Selected node" });
    const viewButton = (label, list) => el("button", { type: "button", class: "tab", "aria-pressed": String(!list),
      onclick: (event) => {
        graphBox.hidden = list;
        this.listBox.hidden = !list;
        toolbar.querySelectorAll(".tab").forEach((b) => b.setAttribute("aria-pressed", String(b === event.currentTarget)));
        toolbar.querySelector(".zoom").hidden = list;
      } }, label);
    const toolbar = el("div", { class: "toolbar", role: "toolbar", "aria-label": "View" },
      viewButton("Graph", false), viewButton("List", true),
      el("span", { class: "zoom" },
        el("button", { type: "button", "aria-label": "Zoom out", onclick: () => this.graph.camera.zoomOut() }, "−"),
        el("button", { type: "button", "aria-label": "Zoom in", onclick: () => this.graph.camera.zoomIn() }, "+"),
        el("button", { type: "button", onclick: () => this.graph.camera.fit() }, "Fit")),
      el("span", { class: "hint keys" }, "drag to pan · wheel or + − to zoom"));
    const legend = el("div", { class: "legend", "aria-hidden": "true" }, Object.keys(NODE_STATES).map((s) => badge(s)));
    this.log = el("ol", { id: "events", class: "events" });
    this.logSummary = el("summary", {}, "Events");
    document.getElementById("main").replaceChildren(
      header,
      el("div", { class: "workspace" }, el("section", { class: "canvas", "aria-label": "Nodes" }, toolbar, graphBox, this.listBox, legend),
        this.details),
      el("details", { class: "log" }, this.logSummary, this.log));
    document.title = `Run #${run.id} · ${name} · Keel`;
    this.graph = drawGraph(graphBox, definition, { onSelect: (id) => this.select(id) });
    this.buildList();
  }

  buildList() {
    const rows = [...this.run.nodes.values()].map((node) => el("tr", { "data-node": node.id },
      el("th", { scope: "row" }, el("button", { type: "button", class: "link", onclick: () => this.select(node.id) }, node.id)),
      el("td", {}, node.type), el("td", { class: "state" }), el("td", { class: "metrics" })));
    this.listRows = new Map(rows.map((row) => [row.dataset.node, row]));
    this.listBox.replaceChildren(el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "Node"), el("th", {}, "Type"), el("th", {}, "State"), el("th", {}, "Duration · tries · tokens · cost"))),
      el("tbody", {}, rows)));
  }

  select(id) {
    this.selected = id;
    this.detailsKey = null;
    this.schedule();
  }

  onEvent(event) {
    if (!apply(this.run, event)) return;
    if (event.type === "human.waiting" && !this.selected) this.selected = event.node_id;
    if (FINISHED.has(this.run.status) && event.type.startsWith("execution.")) this.refreshRecord();
    this.schedule();
  }

  onStreamState(state, detail) {
    this.streamState = state;
    if (state === "refused") this.notice.textContent = detail;
    this.schedule();
  }

  async refreshRecord() {
    try {
      const execution = await api(`/Execution/${this.run.id}`);
      this.execution = execution;
      mergeRecord(this.run, execution);
      this.recorded = execution.usage;
      this.detailsKey = null;
      this.schedule();
    } catch {
      // The page keeps what the events said.
    }
  }

  schedule() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = null;
      this.render();
    });
  }

  render() {
    const run = this.run;
    const now = Date.now();
    this.statusBadge.replaceChildren(badge(run.status));
    const usage = this.recorded;
    const total = usage ? usage.prompt_tokens + usage.completion_tokens : run.promptTokens + run.completionTokens;
    this.facts.tokens.textContent = tokens(total);
    this.facts.cost.textContent = money(usage ? micros(usage.cost_usd) : run.costMicros);
    this.facts.started.textContent = run.startedAt ? time(run.startedAt) : "not yet";
    const end = run.finishedAt ? Date.parse(run.finishedAt) : now;
    this.facts.elapsed.textContent = run.startedAt ? duration(end - Date.parse(run.startedAt)) : "";
    this.facts.stream.textContent = { live: "● live", reconnecting: "reconnecting…", ended: "ended",
      refused: "refused", connecting: "connecting…" }[this.streamState];
    for (const node of run.nodes.values()) {
      const metrics = nodeMetrics(node, now);
      this.graph.update(node.id, node.state, metrics, node.id === this.selected);
      const row = this.listRows.get(node.id);
      if (row) {
        row.className = node.id === this.selected ? "selected" : "";
        row.querySelector(".state").replaceChildren(badge(node.state));
        row.querySelector(".metrics").textContent = metrics;
      }
    }
    this.renderCancel();
    this.renderDetails(now);
    this.renderLog();
  }

  renderCancel() {
    const show = this.canAct && !FINISHED.has(this.run.status);
    if (!show) {
      this.cancelBox.replaceChildren();
      return;
    }
    if (this.cancelBox.childElementCount) return;
    const ask = el("button", { type: "button", class: "danger", id: "cancel-run" }, "Cancel run");
    ask.addEventListener("click", () => {
      const confirm = el("button", { type: "button", class: "danger", id: "confirm-cancel" }, "Yes, cancel the run");
      const keep = el("button", { type: "button", class: "quiet" }, "Keep running");
      keep.addEventListener("click", () => { this.cancelBox.replaceChildren(ask); ask.focus(); });
      confirm.addEventListener("click", async () => {
        confirm.disabled = true;
        try {
          await api(`/Execution/${this.run.id}/cancel`, { method: "POST" });
          this.notice.textContent = "Cancellation requested; the run stops in a moment.";
        } catch (failure) {
          this.notice.textContent = `Cancel refused: ${failure.message}`;
        }
        this.cancelBox.replaceChildren(ask);
      });
      this.cancelBox.replaceChildren(confirm, keep);
      confirm.focus();
    });
    this.cancelBox.replaceChildren(ask);
  }

  renderDetails(now) {
    const node = this.selected ? this.run.nodes.get(this.selected) : null;
    const key = node ? `${node.id}:${node.state}:${this.run.status}` : `run:${this.run.status}`;
    if (key !== this.detailsKey) {
      this.detailsKey = key;
      const parts = node ? this.nodeDetails(node) : this.runDetails();
      this.details.replaceChildren(...parts.flat(2).filter((part) => part !== null && part !== undefined));
    }
    if (!node) return;
    const set = (id, text) => {
      const target = this.details.querySelector(`#${id}`);
      if (target && target.textContent !== text) target.textContent = text;
    };
    set("detail-duration", duration(elapsedMs(node, now)) || "—");
    set("detail-attempts", String(node.attempts || "—"));
    set("detail-tokens", `${node.promptTokens} in · ${node.completionTokens} out`);
    set("detail-cost", money(node.costMicros));
    set("detail-model", [...node.models].join(", ") || "—");
    set("stream-text", node.text);
    set("detail-output", json(node.output));
    set("detail-error", node.error || "");
    for (const section of this.details.querySelectorAll("section[data-empty-hides]")) {
      section.hidden = !section.querySelector("pre").textContent;
    }
    const calls = this.details.querySelector("#tool-calls");
    if (calls && calls.childElementCount !== node.toolCalls.length) {
      calls.replaceChildren(...node.toolCalls.map((call) => el("li", {},
        el("strong", {}, call.tool), " ", call.ok ? "✓ ok" : "✕ failed",
        call.attempts > 1 ? ` (${call.attempts} tries)` : "",
        el("pre", {}, json(call.arguments)), call.error ? el("pre", { class: "error" }, call.error) : null)));
    }
  }

  runDetails() {
    const run = this.run;
    return [
      el("h2", {}, "Run"),
      el("p", { class: "hint" }, "Select a node to see its input, output, streamed text and tool calls."),
      el("h3", {}, "Input"), el("pre", {}, json(this.execution.input) || "{}"),
      run.error ? [el("h3", {}, "Error"), el("pre", { class: "error" }, run.error)] : null,
      run.output !== null && run.output !== undefined ? [el("h3", {}, "Output"), el("pre", {}, json(run.output))] : null,
    ];
  }

  nodeDetails(node) {
    const { id, type, ...spec } = node.definition;
    const parts = [
      el("div", { class: "detail-head" }, el("h2", {}, node.id), badge(node.state),
        el("button", { type: "button", class: "quiet close", "aria-label": "Close details", onclick: () => this.select(null) }, "×")),
      el("p", { class: "hint" }, `${node.type} node`, node.fromExecution ? [" · reused from ",
        el("a", { href: `/runs/${node.fromExecution}` }, `run #${node.fromExecution}`)] : null),
      el("dl", { class: "metrics-table" },
        el("dt", {}, "Duration"), el("dd", { id: "detail-duration" }),
        el("dt", {}, "Attempts"), el("dd", { id: "detail-attempts" }),
        el("dt", {}, "Tokens"), el("dd", { id: "detail-tokens" }),
        el("dt", {}, "Cost"), el("dd", { id: "detail-cost" }),
        el("dt", {}, "Model"), el("dd", { id: "detail-model" })),
    ];
    if (node.state === "waiting") parts.push(this.approvalForm(node));
    if (node.response) {
      const by = node.response.by?.name ? ` by ${node.response.by.name}` : "";
      parts.push(el("h3", {}, "Answer"), el("p", { id: "human-answer" },
        `${node.response.action}${by}${node.response.comment ? `: “${node.response.comment}”` : ""}`));
    }
    if (node.type === "agent") {
      parts.push(el("h3", {}, "Streamed text"),
        el("pre", { id: "stream-text", class: "stream", "aria-live": "polite" }));
    }
    const defined = Object.fromEntries(Object.entries(spec).filter(([, value]) => value !== null));
    parts.push(
      el("section", { "data-empty-hides": true }, el("h3", {}, "Output"), el("pre", { id: "detail-output" })),
      el("section", { "data-empty-hides": true }, el("h3", {}, "Error"), el("pre", { id: "detail-error", class: "error" })),
      node.type === "agent" ? [el("h3", {}, "Tool calls"), el("ul", { id: "tool-calls", class: "tool-calls" })] : null,
      el("h3", {}, "Definition"), el("pre", {}, json(defined)));
    if (this.canAct && FINISHED.has(this.run.status)) parts.push(this.rerunForm(node));
    return parts;
  }

  approvalForm(node) {
    const error = el("p", { class: "form-error", role: "alert" });
    const comment = el("textarea", { id: "approval-comment", rows: "3", maxlength: "10000" });
    const box = el("form", { class: "approval", "aria-labelledby": "approval-title" },
      el("h3", { id: "approval-title" }, "Waiting for approval"),
      el("p", { class: "prompt" }, node.prompt || ""));
    if (!this.canAct) {
      box.append(el("p", { class: "hint" }, "An editor of this workspace can approve or reject it."));
      return box;
    }
    const send = async (action, button) => {
      error.textContent = "";
      box.querySelectorAll("button").forEach((b) => { b.disabled = true; });
      try {
        await api(`/Execution/${this.run.id}/signal`, { method: "POST",
          body: { node_id: node.id, action, comment: comment.value } });
        this.notice.textContent = `${action === "approve" ? "Approval" : "Rejection"} sent for ${node.id}.`;
      } catch (failure) {
        error.textContent = failure.message;
        box.querySelectorAll("button").forEach((b) => { b.disabled = false; });
        button.focus();
      }
    };
    const approve = el("button", { type: "button", class: "primary", id: "approve" }, "✓ Approve");
    const reject = el("button", { type: "button", class: "danger", id: "reject" }, "✕ Reject");
    approve.addEventListener("click", () => send("approve", approve));
    reject.addEventListener("click", () => send("reject", reject));
    box.append(el("label", { for: "approval-comment" }, "Comment"), comment, error,
      el("div", { class: "buttons" }, approve, reject));
    return box;
  }

  rerunForm(node) {
    const error = el("p", { class: "form-error", role: "alert" });
    const input = el("textarea", { id: "rerun-input", rows: "5", spellcheck: "false" }, json(this.execution.input) || "{}");
    const go = el("button", { type: "submit", class: "primary", id: "rerun" }, `Rerun from ${node.id}`);
    const form = el("form", { class: "rerun", "aria-labelledby": "rerun-title" },
      el("h3", { id: "rerun-title" }, "Rerun"),
      el("p", { class: "hint" }, `A new run of the same version: nodes before ${node.id} are reused where nothing they read changed.`),
      el("label", { for: "rerun-input" }, "Input (JSON)"), input, error, el("div", { class: "buttons" }, go));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      let body;
      try {
        body = JSON.parse(input.value || "{}");
      } catch (failure) {
        error.textContent = `The input is not valid JSON: ${failure.message}`;
        return;
      }
      go.disabled = true;
      try {
        const created = await api(`/Execution/${this.run.id}/rerun`, { method: "POST",
          body: { from_node: node.id, input: body } });
        location.assign(`/runs/${created.id}`);
      } catch (failure) {
        error.textContent = `Rerun refused: ${failure.message}`;
        go.disabled = false;
      }
    });
    return form;
  }

  renderLog() {
    const fresh = this.run.events.slice(this.logged);
    if (!fresh.length) return;
    this.logged = this.run.events.length;
    this.log.append(...fresh.map((event) => el("li", { "data-seq": event.seq },
      el("span", { class: "seq" }, String(event.seq)), " ", el("span", { class: "type" }, event.type),
      event.node_id ? ` ${event.node_id}` : "")));
    while (this.log.childElementCount > MAX_LOG_ROWS) this.log.firstElementChild.remove();
    this.logSummary.textContent = `Events (${this.run.events.length})`;
  }
}

start(async (who) => {
  const id = location.pathname.match(/^\/runs\/(\d{1,18})\/?$/)?.[1];
  if (!id) {
    showMessage("No such run", "A run's address is /runs/ followed by its number.");
    return;
  }
  let execution;
  try {
    execution = await api(`/Execution/${id}`);
  } catch (failure) {
    if (failure.status === 404 || failure.status === 422) {
      showMessage("Run not found", `Run ${id} does not exist, or it belongs to another workspace.`);
      return;
    }
    throw failure;
  }
  const [version, workflow, budget] = await Promise.all([
    api(`/Workflow/${execution.workflow_id}/versions/${execution.workflow_version}`),
    api(`/Workflow/${execution.workflow_id}`).catch(() => null),
    api("/Billing/budget").catch(() => null),
  ]);
  new RunPage(execution, version.definition, workflow, budget, allows(who.role, "editor"));
});
