// A run as the page knows it, built from its events in seq order. Each event is applied
// once: one with a seq already seen (a resumed stream repeating itself) is ignored.
import { micros } from "./format.js";

export const NODE_STATES = {
  pending: { icon: "○", label: "pending" },
  running: { icon: "▶", label: "running" },
  retrying: { icon: "↻", label: "retrying" },
  waiting: { icon: "‖", label: "waiting" },
  completed: { icon: "✓", label: "completed" },
  failed: { icon: "✕", label: "failed" },
  cancelled: { icon: "⊘", label: "cancelled" },
  reused: { icon: "⤴", label: "reused" },
};
const ACTIVE = new Set(["running", "retrying", "waiting"]);
export const FINISHED = new Set(["completed", "failed", "cancelled"]);

function blankNode(definition) {
  return {
    id: definition.id, type: definition.type, definition, state: "pending", attempts: 0,
    startedAt: null, durationMs: null, promptTokens: 0, completionTokens: 0, costMicros: 0,
    models: new Set(), text: "", toolCalls: [], output: undefined, error: null, prompt: null,
    response: null, fromExecution: null,
  };
}

export function newRun(execution, definition) {
  const nodes = new Map((definition.nodes || []).map((node) => [node.id, blankNode(node)]));
  return {
    id: execution.id, status: execution.status, lastSeq: 0, events: [], nodes,
    startedAt: execution.started_at, finishedAt: execution.finished_at,
    promptTokens: 0, completionTokens: 0, costMicros: 0, output: execution.output, error: execution.error,
  };
}

function nodeOf(run, event) {
  if (!event.node_id) return null;
  // A node the definition lacks should not happen: show it rather than drop it.
  if (!run.nodes.has(event.node_id)) run.nodes.set(event.node_id, blankNode({ id: event.node_id, type: "?" }));
  return run.nodes.get(event.node_id);
}

/** Apply one event; false when its seq was already applied. */
export function apply(run, event) {
  if (event.seq <= run.lastSeq) return false;
  run.lastSeq = event.seq;
  run.events.push(event);
  const node = nodeOf(run, event);
  const data = event.data || {};
  switch (event.type) {
    case "execution.started":
      run.status = "running";
      run.startedAt = run.startedAt || event.ts;
      break;
    case "node.started":
      Object.assign(node, { state: "running", startedAt: event.ts, durationMs: null, error: null });
      node.attempts = Math.max(node.attempts, 1);
      break;
    case "node.retrying":
      node.state = "retrying";
      node.attempts = Math.max(node.attempts, Number(data.attempt) || node.attempts + 1);
      node.error = data.error ?? node.error;
      break;
    case "node.completed":
      node.state = data.reused ? "reused" : "completed";
      node.output = data.output;
      node.durationMs = data.reused ? null : data.duration_ms ?? null; // a reused node did not run
      node.attempts = data.attempts ?? node.attempts;
      node.fromExecution = data.from_execution ?? null;
      break;
    case "node.failed":
      node.state = "failed";
      node.error = data.error ?? "failed";
      node.attempts = data.attempts ?? node.attempts;
      if (node.startedAt) node.durationMs = Date.parse(event.ts) - Date.parse(node.startedAt);
      break;
    case "llm.delta":
      node.text += data.delta ?? "";
      break;
    case "tool.called":
      node.toolCalls.push(data);
      break;
    case "human.waiting":
      node.state = "waiting";
      node.prompt = data.prompt ?? "";
      run.status = "waiting";
      break;
    case "human.responded":
      node.state = "running";
      node.response = data;
      run.status = "running";
      break;
    case "usage.recorded": {
      const cost = micros(data.cost_usd);
      node.promptTokens += data.prompt_tokens || 0;
      node.completionTokens += data.completion_tokens || 0;
      node.costMicros += cost;
      if (data.model) node.models.add(data.model);
      run.promptTokens += data.prompt_tokens || 0;
      run.completionTokens += data.completion_tokens || 0;
      run.costMicros += cost;
      break;
    }
    case "execution.completed":
      run.status = "completed";
      run.output = data.output;
      break;
    case "execution.failed":
      run.status = "failed";
      run.error = data.error;
      break;
    case "execution.cancelled":
      run.status = "cancelled";
      run.cancelledBy = data.by;
      break;
    default:
      break;
  }
  if (FINISHED.has(run.status) && event.type.startsWith("execution.")) {
    run.finishedAt = run.finishedAt || event.ts;
    for (const other of run.nodes.values()) {
      if (ACTIVE.has(other.state)) {
        other.state = "cancelled";
        if (other.startedAt) other.durationMs = Date.parse(event.ts) - Date.parse(other.startedAt);
      }
    }
  }
  return true;
}

/** Fill in what the stored record knows and the events may not (reused marks, rows). */
export function mergeRecord(run, execution) {
  run.status = execution.status;
  run.startedAt = execution.started_at || run.startedAt;
  run.finishedAt = execution.finished_at || run.finishedAt;
  run.output = execution.output ?? run.output;
  run.error = execution.error ?? run.error;
  for (const row of execution.nodes || []) {
    const node = run.nodes.get(row.node_id);
    if (!node) continue;
    if (row.reused) {
      node.state = "reused";
      node.fromExecution = node.fromExecution || execution.parent_execution_id;
    }
    if (node.output === undefined && row.output !== null) node.output = row.output;
    node.error = node.error || row.error;
    node.attempts = Math.max(node.attempts, row.attempts || 0);
    if (node.durationMs === null && !row.reused && row.started_at && row.finished_at) {
      node.durationMs = Date.parse(row.finished_at) - Date.parse(row.started_at);
    }
  }
}

export function elapsedMs(node, now = Date.now()) {
  if (node.durationMs !== null) return node.durationMs;
  return node.startedAt && ACTIVE.has(node.state) ? now - Date.parse(node.startedAt) : null;
}
