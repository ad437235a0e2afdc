// How numbers, money, durations and times read on the pages.

/** "0.001250" (decimal USD, as the API sends it) -> integer micro-dollars: no float sums. */
export function micros(usd) {
  if (usd === null || usd === undefined || usd === "") return 0;
  const [whole, fraction = ""] = String(usd).split(".");
  const sign = whole.startsWith("-") ? -1 : 1;
  return sign * (Math.abs(Number(whole)) * 1e6 + Number(fraction.padEnd(6, "0").slice(0, 6)));
}

export function money(microUsd) {
  const whole = Math.floor(Math.abs(microUsd) / 1e6);
  const fraction = String(Math.abs(microUsd) % 1e6).padStart(6, "0").replace(/0{1,4}$/, "");
  return `${microUsd < 0 ? "-" : ""}$${whole}.${fraction.padEnd(2, "0")}`;
}

export function tokens(count) {
  return `${Number(count || 0).toLocaleString("en")} tok`;
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} m ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} m`;
}

export function time(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export function json(value) {
  if (value === undefined || value === null) return "";
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

/** A tiny element builder: el("td", {class: "x"}, "text", child). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}
