// Live events: the four streams from now on, newest first, pausable.
import { h, replace } from "../dom";
import { risk, compliance, when, traceId } from "../api";
import { watch, type Feed } from "../live";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { TraceContext } from "@gen/condaccess/common/v1/common_pb";

const KEEP = 200;

export async function eventsPage(root: HTMLElement, signal: AbortSignal): Promise<void> {
  const body = h("tbody");
  let paused = false;
  const buffered: HTMLTableRowElement[] = [];
  const pause = h("button", { type: "button", "aria-pressed": "false" }, "Pause");
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
    if (!paused) { for (const r of buffered.splice(0)) body.prepend(r); trim(); }
  });
  const trim = () => { while (body.rows.length > KEEP) body.deleteRow(body.rows.length - 1); };
  replace(root, h("h1", null, "Live events"), h("div", { class: "row" }, pause, h("span", { class: "muted" }, `The last ${KEEP} events of the risk, compliance, session and investigation streams.`)),
    h("table", { id: "events" }, h("thead", null, h("tr", null, ["Time", "Stream", "Revision", "Event", "Trace"].map((c) => h("th", { scope: "col" }, c)))), body));
  const add = (feed: Feed, rev: bigint, at: Timestamp | undefined, what: string, tc: TraceContext | undefined) => {
    const tr = h("tr", { "data-feed": feed, "data-rev": String(rev) }, h("td", null, when(at)), h("td", null, feed), h("td", { class: "mono" }, rev), h("td", null, what), h("td", { class: "mono" }, traceId(tc)));
    if (paused) { buffered.unshift(tr); buffered.length = Math.min(buffered.length, KEEP); return; }
    body.prepend(tr);
    trim();
  };
  const [rr, cr] = await Promise.all([risk.listDeviceRisks({ pageSize: 1 }, { signal }), compliance.listDeviceCompliance({ pageSize: 1 }, { signal })]);
  watch(signal, { risk: rr.revision, compliance: cr.revision, session: 0n, investigation: 0n }, {
    risk: (e) => add("risk", e.revision, e.eventTime, e.payload.case === "alertChanged" ? `alert ${e.payload.value.alert?.alertId} on ${e.payload.value.alert?.deviceId}` : `risk of ${e.payload.value?.deviceRisk?.deviceId}`, e.traceContext),
    compliance: (e) => add("compliance", e.revision, e.eventTime, e.payload.case === "deviceComplianceChanged" ? `compliance of ${e.payload.value.deviceCompliance?.deviceId}` : e.payload.case === "deviceIdentityChanged" ? `identity of ${e.payload.value.identity?.deviceId} ${e.payload.value.identity?.state === 2 ? "revoked" : "changed"}` : `device ${e.payload.value?.device?.deviceId} changed`, e.traceContext),
    session: (e) => add("session", e.revision, e.eventTime, `${e.payload.case ?? "event"} ${e.payload.value?.session?.sessionId ?? ""}`, e.traceContext),
    investigation: (e) => add("investigation", e.revision, e.eventTime, e.payload.case === "actionChanged" ? `action ${e.payload.value.action?.actionId}` : `investigation ${e.payload.value?.investigation?.investigationId}`, e.traceContext),
  });
}
