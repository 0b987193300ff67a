// Audit log: who changed what, when, through which method; filtered, paged, before/after.
import { h, replace, field, input, link } from "../dom";
import { audit, name, when, fail } from "../api";
import { toJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, timestampFromDate, type Value } from "@bufbuild/protobuf/wkt";
import { AuditAction, type AuditEvent } from "@gen/condaccess/audit/v1/audit_pb";

/** json turns a recorded resource into plain JSON (undefined when absent). */
function json(v: Value | undefined): JsonValue | undefined {
  return v ? toJson(ValueSchema, v) : undefined;
}

/** changedFields names the top-level fields whose values differ between before and after. */
export function changedFields(before: JsonValue | undefined, after: JsonValue | undefined): string[] {
  const obj = (v: JsonValue | undefined): Record<string, JsonValue> =>
    v !== null && typeof v === "object" && !Array.isArray(v) ? v : {};
  const b = obj(before), a = obj(after);
  const keys = [...new Set([...Object.keys(b), ...Object.keys(a)])].sort();
  return keys.filter((k) => canonical(b[k]) !== canonical(a[k]));
}

/** canonical serialises v with object keys sorted, so key order makes no difference. */
function canonical(v: JsonValue | undefined): string {
  if (v === undefined) return "undefined";
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`;
}

function change(e: AuditEvent): HTMLElement {
  const before = json(e.before), after = json(e.after);
  const changed = e.action === AuditAction.UPDATE ? changedFields(before, after) : [];
  const pane = (title: string, v: JsonValue | undefined, cls: string) =>
    h("div", { class: `pane ${cls}` }, h("h3", null, title), v === undefined ? h("p", { class: "muted" }, "none") : h("pre", { class: "mono" }, JSON.stringify(v, null, 2)));
  return h("details", null,
    h("summary", null, changed.length > 0 ? `changed: ${changed.join(", ")}` : name(AuditAction, e.action).toLowerCase()),
    h("div", { class: "panes" }, pane("Before", before, "before"), pane("After", after, "after")),
    e.etag ? h("p", { class: "mono muted" }, `etag ${e.etag}`) : null);
}

/** localTime parses a datetime-local input (empty: no bound). */
function localTime(el: HTMLInputElement) {
  return el.value ? timestampFromDate(new Date(el.value)) : undefined;
}

export async function auditPage(root: HTMLElement, signal: AbortSignal): Promise<void> {
  const q = new URLSearchParams(location.search);
  const actor = input("actor", q.get("actor") ?? "", "subject"), type = input("resourceType", q.get("resource_type") ?? "", "e.g. conditional_access_policy");
  const id = input("resourceId", q.get("resource_id") ?? "", "resource id"), method = input("method", q.get("method") ?? "", "/condaccess.… full method");
  const from = h("input", { name: "startTime", type: "datetime-local" }), to = h("input", { name: "endTime", type: "datetime-local" });
  const body = h("tbody");
  const msg = h("p", { role: "status", class: "muted" });
  const prev = h("button", { type: "button", id: "audit-prev" }, "Previous page"), next = h("button", { type: "button", id: "audit-next" }, "Next page");
  const form = h("form", { class: "filters", role: "search" }, field("Actor", actor), field("Resource type", type), field("Resource id", id),
    field("Method", method), field("From", from), field("Until", to), h("button", { type: "submit", class: "primary" }, "Apply"));
  replace(root, h("h1", null, "Audit log"), form,
    h("table", { id: "audit" }, h("thead", null, h("tr", null, ["Time", "Service", "Actor", "Method", "Action", "Resource", "Trace", "Before / after"].map((c) => h("th", { scope: "col" }, c)))), body),
    h("div", { class: "row" }, prev, next), msg);
  const tokens = [""];
  let ix = 0;
  const load = async () => {
    try {
      const r = await audit.listAuditEvents({ pageSize: 50, pageToken: tokens[ix], actor: actor.value.trim(), resourceType: type.value.trim(),
        resourceId: id.value.trim(), method: method.value.trim(), startTime: localTime(from), endTime: localTime(to) }, { signal });
      replace(body, r.events.length === 0 ? h("tr", null, h("td", { colspan: 8, class: "muted" }, "No audit events match.")) : r.events.map((e) =>
        h("tr", { "data-audit": `${e.service}/${e.id}`, "data-resource": e.resourceId },
          h("td", null, when(e.time)), h("td", null, e.service),
          h("td", null, e.actor?.subject ?? "", e.actor?.roles.length ? h("br") : null, e.actor?.roles.length ? h("span", { class: "muted" }, e.actor.roles.join(", ")) : null),
          h("td", { class: "mono" }, e.method || h("span", { class: "muted" }, "by the service")),
          h("td", null, name(AuditAction, e.action)),
          h("td", null, e.resourceType, h("br"), e.resourceType === "device" ? link(`/devices/${encodeURIComponent(e.resourceId)}`, e.resourceId) : h("span", { class: "mono" }, e.resourceId)),
          h("td", { class: "mono" }, e.traceId),
          h("td", null, change(e)))));
      if (r.nextPageToken) tokens[ix + 1] = r.nextPageToken;
      prev.disabled = ix === 0;
      next.disabled = r.nextPageToken === "";
      msg.textContent = `Page ${ix + 1}`;
    } catch (e) { fail(msg, e); }
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); tokens.length = 1; ix = 0; void load(); });
  prev.addEventListener("click", () => { if (ix > 0) { ix--; void load(); } });
  next.addEventListener("click", () => { if (tokens[ix + 1] !== undefined) { ix++; void load(); } });
  await load();
}
