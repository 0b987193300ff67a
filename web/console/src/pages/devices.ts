// Devices (paged, filtered, live) and the device page with its cause-chain timeline.
import { Code } from "@connectrpc/connect";
import { h, link, replace, field, select, input } from "../dom";
import { devices, compliance, risk, access, remediation, name, date, traceId, errorText, isCode, fail } from "../api";
import { watch } from "../live";
import { ComplianceState, Platform, RiskLevel } from "@gen/condaccess/common/v1/common_pb";
import type { Device, DeviceCompliance } from "@gen/condaccess/compliance/v1/compliance_pb";
import { AlertChangeType, AlertClassification, type RiskEvent } from "@gen/condaccess/risk/v1/risk_pb";
import type { ComplianceEvent } from "@gen/condaccess/compliance/v1/compliance_pb";
import type { SessionEvent } from "@gen/condaccess/access/v1/access_pb";
import { ActionState, ActionType, InvestigationState, type InvestigationEvent } from "@gen/condaccess/remediation/v1/remediation_pb";
import type { TraceContext } from "@gen/condaccess/common/v1/common_pb";
import type { Timestamp } from "@bufbuild/protobuf/wkt";

const PAGE = 50;

const enumOptions = (e: Record<number, string>, any: string): [string, string][] =>
  [["", any], ...Object.entries(e).filter(([k, v]) => !isNaN(Number(k)) && v !== "UNSPECIFIED").map(([k, v]) => [k, v] as [string, string])];

export async function devicesPage(root: HTMLElement, signal: AbortSignal): Promise<void> {
  const q = new URLSearchParams(location.search);
  const search = input("q", q.get("q") ?? "", "exact device id");
  const group = input("group", q.get("group") ?? "", "group");
  const platform = select("platform", enumOptions(Platform, "any platform"), q.get("platform") ?? "");
  const state = select("state", enumOptions(ComplianceState, "any compliance"), q.get("state") ?? "");
  const minRisk = select("risk", enumOptions(RiskLevel, "any risk"), q.get("risk") ?? "");
  const body = h("tbody");
  const status = h("p", { class: "muted", role: "status" });
  const prev = h("button", { type: "button" }, "Previous page");
  const next = h("button", { type: "button" }, "Next page");
  const form = h("form", { class: "filters", role: "search" },
    field("Device id", search), field("Group", group), field("Platform", platform), field("Compliance", state), field("Minimum risk", minRisk),
    h("button", { type: "submit", class: "primary" }, "Apply"));
  replace(root, h("h1", null, "Devices"), form,
    h("table", { id: "devices" }, h("thead", null, h("tr", null, ["Device", "Name", "Platform", "OS", "Groups", "Risk", "Compliance"].map((c) => h("th", { scope: "col" }, c)))), body),
    h("div", { class: "row" }, prev, next), status);

  const shown = new Map<string, HTMLTableRowElement>();
  const tokens: string[] = [""];
  let pageIx = 0;
  const row = (d: Device | undefined, id: string, dc: DeviceCompliance | undefined) => {
    const tr = h("tr", { "data-device": id, "data-state": dc ? name(ComplianceState, dc.state) : "" },
      h("td", null, link(`/devices/${encodeURIComponent(id)}`, id)),
      h("td", null, d?.displayName ?? ""), h("td", null, d ? name(Platform, d.platform) : ""), h("td", null, d?.osVersion ?? ""),
      h("td", null, d?.groups.join(", ") ?? ""),
      h("td", { class: dc ? `level-${name(RiskLevel, dc.deviceRisk)}` : "" }, dc ? name(RiskLevel, dc.deviceRisk) : "–"),
      h("td", { class: dc ? `state-${name(ComplianceState, dc.state)}` : "" }, dc ? name(ComplianceState, dc.state) : "–"));
    shown.set(id, tr);
    return tr;
  };
  const load = async () => {
    const t0 = performance.now();
    shown.clear();
    status.textContent = "Loading…";
    let ids: { id: string; d?: Device; dc?: DeviceCompliance }[] = [];
    let nextToken = "";
    try {
      if (search.value.trim() !== "") {
        const d = (await devices.getDevice({ deviceId: search.value.trim() }, { signal })).device;
        ids = d ? [{ id: d.deviceId, d }] : [];
      } else if (minRisk.value !== "") {
        const r = await risk.listDeviceRisks({ pageSize: PAGE, pageToken: tokens[pageIx], minLevel: Number(minRisk.value) }, { signal });
        ids = r.deviceRisks.map((dr) => ({ id: dr.deviceId }));
        nextToken = r.nextPageToken;
      } else if (state.value !== "") {
        const r = await compliance.listDeviceCompliance({ pageSize: PAGE, pageToken: tokens[pageIx], state: Number(state.value) }, { signal });
        ids = r.deviceCompliances.map((dc) => ({ id: dc.deviceId, dc }));
        nextToken = r.nextPageToken;
      } else {
        const r = await devices.listDevices({ pageSize: PAGE, pageToken: tokens[pageIx], group: group.value.trim(), platform: Number(platform.value || 0) }, { signal });
        ids = r.devices.map((d) => ({ id: d.deviceId, d }));
        nextToken = r.nextPageToken;
      }
    } catch (err) {
      if (isCode(err, Code.NotFound)) status.textContent = "No such device.";
      else fail(status, err);
      replace(body);
      return;
    }
    replace(body, ids.map((x) => row(x.d, x.id, x.dc)));
    status.textContent = ids.length === 0 ? "No devices match." : `Page ${pageIx + 1}, ${ids.length} devices (${Math.round(performance.now() - t0)} ms).`;
    if (nextToken !== "") tokens[pageIx + 1] = nextToken;
    prev.disabled = pageIx === 0;
    next.disabled = nextToken === "";
    // Fill in the missing half of each row (device or compliance) in the background.
    await Promise.all(ids.map(async (x) => {
      try {
        const d = x.d ?? (await devices.getDevice({ deviceId: x.id }, { signal })).device;
        const dc = x.dc ?? (await compliance.getDeviceCompliance({ deviceId: x.id }, { signal })).deviceCompliance;
        shown.get(x.id)?.replaceWith(row(d, x.id, dc));
      } catch { /* the row keeps its dashes */ }
    }));
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    tokens.length = 1;
    pageIx = 0;
    const p = new URLSearchParams();
    for (const [k, el] of [["q", search], ["group", group], ["platform", platform], ["state", state], ["risk", minRisk]] as const) if (el.value) p.set(k, el.value);
    history.replaceState(null, "", `/devices${p.size ? "?" + p.toString() : ""}`);
    void load();
  });
  prev.addEventListener("click", () => { if (pageIx > 0) { pageIx--; void load(); } });
  next.addEventListener("click", () => { if (tokens[pageIx + 1] !== undefined) { pageIx++; void load(); } });
  const rev = (await compliance.listDeviceCompliance({ pageSize: 1 }, { signal })).revision;
  await load();
  // matches says whether a device belongs on this page under the current filter
  // (the same filter the listing applied).
  const matches = (id: string, d: Device | undefined, dc: DeviceCompliance | undefined): boolean => {
    if (!d || d.retired) return false;
    if (search.value.trim() !== "") return id === search.value.trim();
    if (minRisk.value !== "") return (dc?.deviceRisk ?? 0) >= Number(minRisk.value);
    if (state.value !== "") return dc?.state === Number(state.value);
    return (group.value.trim() === "" || d.groups.includes(group.value.trim())) && (platform.value === "" || d.platform === Number(platform.value));
  };
  // Live: a change updates its row, removes it when the device stops matching the
  // filter, and inserts it (at the top of the first page) when it starts matching.
  const changed = async (id: string, d: Device | undefined, dc: DeviceCompliance | undefined) => {
    try {
      d ??= (await devices.getDevice({ deviceId: id }, { signal })).device;
      dc ??= (await compliance.getDeviceCompliance({ deviceId: id }, { signal }).catch(() => ({ deviceCompliance: undefined }))).deviceCompliance;
    } catch { /* retired or gone: d stays undefined, so the row goes */ }
    const tr = shown.get(id);
    if (!matches(id, d, dc)) {
      if (tr) { tr.remove(); shown.delete(id); }
      return;
    }
    if (tr) tr.replaceWith(row(d, id, dc));
    else if (pageIx === 0) body.insertBefore(row(d, id, dc), body.firstChild);
  };
  watch(signal, { compliance: rev }, {
    compliance: (ev) => {
      if (ev.payload.case === "deviceComplianceChanged" && ev.payload.value.deviceCompliance) {
        const dc = ev.payload.value.deviceCompliance;
        void changed(dc.deviceId, undefined, dc);
      } else if (ev.payload.case === "deviceChanged" && ev.payload.value.device) {
        const d = ev.payload.value.device;
        void changed(d.deviceId, d, undefined);
      }
    },
  });
}

interface Step { at: number; kind: string; text: string; trace: string; cls?: string }

export async function devicePage(root: HTMLElement, signal: AbortSignal, id: string): Promise<void> {
  replace(root, h("h1", null, id), h("p", { class: "muted" }, "Loading…"));
  let device: Device | undefined;
  try {
    device = (await devices.getDevice({ deviceId: id }, { signal })).device;
  } catch (err) {
    replace(root, h("h1", null, id), h("p", { class: "error", role: "alert" }, isCode(err, Code.NotFound) ? "No such device." : errorText(err)));
    return;
  }
  const summary = h("div", { class: "cards" });
  const settings = h("div");
  const list = h("ol", { class: "timeline", id: "timeline", "aria-live": "polite" });
  replace(root, h("h1", null, device?.displayName || id, " ", h("span", { class: "muted mono" }, id)), summary, settings,
    h("h2", null, "Timeline"), h("p", { class: "muted" }, "Alerts, risk and compliance changes, revoked sessions, the investigation and its actions, each with its trace id."), list);

  const showCompliance = (dc: DeviceCompliance | undefined) => {
    if (!dc) return;
    replace(summary,
      h("div", { class: "card" }, h("h2", null, "Compliance"), h("div", { class: `num state-${name(ComplianceState, dc.state)}`, id: "device-state" }, name(ComplianceState, dc.state)), h("p", null, dc.reason)),
      h("div", { class: "card" }, h("h2", null, "Risk"), h("div", { class: `num level-${name(RiskLevel, dc.deviceRisk)}`, id: "device-risk" }, name(RiskLevel, dc.deviceRisk))),
      h("div", { class: "card" }, h("h2", null, "Device"), h("dl", null,
        h("dt", null, "Platform"), h("dd", null, device ? name(Platform, device.platform) : ""),
        h("dt", null, "OS"), h("dd", null, device?.osVersion ?? ""),
        h("dt", null, "Owner"), h("dd", null, device?.ownerUserId ?? ""),
        h("dt", null, "Groups"), h("dd", null, device?.groups.join(", ") ?? ""))));
    replace(settings, h("h2", null, "Policy results"), h("table", null,
      h("thead", null, h("tr", null, ["Policy", "State", "Setting", "Expected", "Actual", "Reason"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", null, dc.policies.flatMap((p) => p.settings.map((s) => h("tr", null,
        h("td", null, p.policyDisplayName || p.policyId), h("td", { class: `state-${name(ComplianceState, p.state)}` }, name(ComplianceState, p.state)),
        h("td", null, s.setting), h("td", null, s.expected), h("td", null, s.actual), h("td", null, s.reason)))))));
  };
  try {
    showCompliance((await compliance.getDeviceCompliance({ deviceId: id }, { signal })).deviceCompliance);
  } catch { /* not evaluated yet */ }

  const steps: Step[] = [];
  const seen = new Set<string>();
  const add = (key: string, at: Timestamp | undefined, kind: string, text: string, tc: TraceContext | undefined, cls?: string) => {
    if (seen.has(key)) return;
    seen.add(key);
    steps.push({ at: date(at)?.getTime() ?? Date.now(), kind, text, trace: traceId(tc), cls });
    steps.sort((a, b) => a.at - b.at);
    replace(list, steps.map((s) => h("li", { "data-kind": s.kind, "data-trace": s.trace },
      h("span", { class: "muted" }, new Date(s.at).toLocaleTimeString()), " ",
      h("strong", { class: s.cls ?? "" }, s.text), " ",
      s.trace ? h("span", { class: "pill mono", title: "trace id" }, s.trace) : null)));
  };
  let lastState = 0;
  const on = {
    risk: (ev: RiskEvent) => {
      const p = ev.payload;
      if (p.case === "alertChanged" && p.value.alert?.deviceId === id) {
        const a = p.value.alert;
        if (p.value.type === AlertChangeType.REPORTED) add(`alert-${a.alertId}`, ev.eventTime, "alert", `Alert: ${a.title} (${name(RiskLevel, a.severity)})`, ev.traceContext, "bad");
        if (p.value.type === AlertChangeType.RESOLVED) add(`resolved-${a.alertId}`, ev.eventTime, "alert-resolved", `Alert resolved: ${a.title} (${name(AlertClassification, a.classification)})`, ev.traceContext);
      } else if (p.case === "deviceRiskChanged" && p.value.deviceRisk?.deviceId === id) {
        const r = p.value.deviceRisk;
        add(`risk-${ev.revision}`, ev.eventTime, "risk", `Risk ${name(RiskLevel, r.level)} (was ${name(RiskLevel, p.value.previousLevel || RiskLevel.NONE)})`, ev.traceContext, `level-${name(RiskLevel, r.level)}`);
      }
    },
    compliance: (ev: ComplianceEvent) => {
      const p = ev.payload;
      if (p.case !== "deviceComplianceChanged" || p.value.deviceCompliance?.deviceId !== id) return;
      const dc = p.value.deviceCompliance;
      if (dc.state !== p.value.previousState) {
        const restored = dc.state === ComplianceState.COMPLIANT && lastState === ComplianceState.NONCOMPLIANT;
        add(`compliance-${ev.revision}`, ev.eventTime, "compliance", `Compliance ${name(ComplianceState, dc.state)} (was ${name(ComplianceState, p.value.previousState)})${dc.reason ? ": " + dc.reason : ""}`, ev.traceContext, `state-${name(ComplianceState, dc.state)}`);
        if (restored) add(`restored-${ev.revision}`, ev.eventTime, "restored", "Access restored: the device is compliant again", ev.traceContext, "good");
        lastState = dc.state;
      }
      showCompliance(dc);
    },
    session: (ev: SessionEvent) => {
      const p = ev.payload;
      if (p.case === "sessionRevoked" && p.value.session?.deviceId === id) {
        add(`session-${p.value.session.sessionId}`, ev.eventTime, "session", `Session revoked for ${p.value.session.userId} on ${p.value.session.applicationId} (${p.value.reasonCode})`, ev.traceContext, "bad");
      }
    },
    investigation: (ev: InvestigationEvent) => {
      const p = ev.payload;
      if (p.case === "investigationChanged" && p.value.investigation?.deviceId === id) {
        const inv = p.value.investigation;
        add(`inv-${inv.investigationId}-${inv.state}`, ev.eventTime, "investigation", `Investigation ${inv.investigationId}: ${name(InvestigationState, inv.state)}`, ev.traceContext);
      } else if (p.case === "actionChanged" && p.value.action?.deviceId === id) {
        const a = p.value.action;
        const who = a.approval?.decidedBy ? ` by ${a.approval.decidedBy}` : "";
        add(`action-${a.actionId}-${a.state}`, ev.eventTime, "action", `Action ${name(ActionType, a.type)} ${a.actionId}: ${name(ActionState, a.state)}${a.state === ActionState.QUEUED ? who : ""}`, ev.traceContext);
      }
    },
  };
  // The device's history: each stream replays, filtered by the server to this device
  // (device_id), up to its first progress message, one stream at a time (a browser has
  // six HTTP/1.1 connections per host; the shared feeds hold up to four). Then the
  // shared feeds carry it on live from where each replay ended. A replay that fails
  // leaves its feed to replay the whole history, filtered here.
  type Msg = { kind: { case: "event"; value: { revision: bigint } } | { case: "progress"; value: { revision: bigint } } | { case: undefined; value?: undefined } };
  const replay = async (open: (s: AbortSignal) => AsyncIterable<Msg>, deliver: (ev: never) => void): Promise<bigint> => {
    const ctl = new AbortController();
    const stop = () => ctl.abort();
    signal.addEventListener("abort", stop);
    let rev = 0n;
    try {
      for await (const m of open(ctl.signal)) {
        if (m.kind.case === "event") { (deliver as (ev: unknown) => void)(m.kind.value); rev = m.kind.value.revision; }
        else if (m.kind.case === "progress") { rev = m.kind.value.revision; break; }
      }
    } catch { rev = 0n; } finally { ctl.abort(); signal.removeEventListener("abort", stop); }
    return rev;
  };
  const from = {
    risk: await replay((s) => risk.watchRiskEvents({ deviceId: id }, { signal: s }) as AsyncIterable<Msg>, on.risk),
    compliance: await replay((s) => compliance.watchComplianceEvents({ deviceId: id }, { signal: s }) as AsyncIterable<Msg>, on.compliance),
    session: await replay((s) => access.watchSessionEvents({ deviceId: id }, { signal: s }) as AsyncIterable<Msg>, on.session),
    investigation: await replay((s) => remediation.watchInvestigationEvents({ deviceId: id }, { signal: s }) as AsyncIterable<Msg>, on.investigation),
  };
  if (signal.aborted) return;
  watch(signal, from, on);

}
