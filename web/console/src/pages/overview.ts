// Overview: devices by risk and compliance, blocked sign-ins in the last hour, pending
// approvals and feed lag; live from the compliance and investigation streams.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { h, link, replace } from "../dom";
import { compliance, access, risk, name, pages } from "../api";
import { watch, type Feed, type FeedState } from "../live";
import { ComplianceState, RiskLevel } from "@gen/condaccess/common/v1/common_pb";
import type { DeviceCompliance } from "@gen/condaccess/compliance/v1/compliance_pb";
import { Decision } from "@gen/condaccess/access/v1/access_pb";
import { ActionState } from "@gen/condaccess/remediation/v1/remediation_pb";

const MAX_DEVICES = 100000; // devices the overview counts; more are summarised as "at least"

export async function overview(root: HTMLElement, signal: AbortSignal): Promise<void> {
  replace(root, h("h1", null, "Overview"), h("p", { class: "muted" }, "Loading…"));
  let revision = 0n;
  const states = new Map<string, DeviceCompliance>();
  const list = await pages(async (pageToken) => {
    const r = await compliance.listDeviceCompliance({ pageSize: 1000, pageToken }, { signal });
    if (revision === 0n) revision = r.revision;
    return { items: r.deviceCompliances, next: r.nextPageToken };
  }, MAX_DEVICES);
  for (const dc of list) states.set(dc.deviceId, dc);
  const partial = list.length >= MAX_DEVICES;
  const riskRev = (await risk.listDeviceRisks({ pageSize: 1 }, { signal })).revision;
  const pending = new Map<string, string>(); // action id -> device id

  const byRisk = h("div", { class: "card", "aria-live": "polite" });
  const byState = h("div", { class: "card", "aria-live": "polite" });
  const blocked = h("div", { class: "card" });
  const approvals = h("div", { class: "card" });
  const lag = h("div", { class: "card" });
  const attention = h("tbody");
  replace(root,
    h("h1", null, "Overview"),
    h("div", { class: "cards" }, byRisk, byState, blocked, approvals, lag),
    h("h2", null, "Devices that need attention"),
    h("table", { id: "attention" }, h("thead", null, h("tr", null, h("th", null, "Device"), h("th", null, "Compliance"), h("th", null, "Risk"), h("th", null, "Reason"))), attention));

  const counts = () => {
    const r = new Map<number, number>(), s = new Map<number, number>();
    for (const dc of states.values()) {
      r.set(dc.deviceRisk, (r.get(dc.deviceRisk) ?? 0) + 1);
      s.set(dc.state, (s.get(dc.state) ?? 0) + 1);
    }
    const dl = (m: Map<number, number>, e: Record<number, string>, cls: string) => h("dl", null,
      [...m.entries()].sort((a, b) => b[0] - a[0]).map(([k, v]) => [h("dt", { class: `${cls}-${name(e, k)}` }, name(e, k)), h("dd", { "data-count": `${cls}-${name(e, k)}` }, v)]));
    const note = partial ? h("p", { class: "muted" }, `first ${MAX_DEVICES.toLocaleString()} devices`) : null;
    replace(byRisk, h("h2", null, "Devices by risk"), dl(r, RiskLevel, "level"), note);
    replace(byState, h("h2", null, "Devices by compliance"), dl(s, ComplianceState, "state"), note?.cloneNode(true) ?? null);
    const rows = [...states.values()].filter((dc) => dc.state !== ComplianceState.COMPLIANT).slice(0, 50);
    replace(attention, rows.length === 0 ? h("tr", null, h("td", { colspan: 4, class: "muted" }, "Every device is compliant.")) :
      rows.map((dc) => h("tr", { "data-device": dc.deviceId, "data-state": name(ComplianceState, dc.state) },
        h("td", null, link(`/devices/${encodeURIComponent(dc.deviceId)}`, dc.deviceId)),
        h("td", { class: `state-${name(ComplianceState, dc.state)}` }, name(ComplianceState, dc.state)),
        h("td", { class: `level-${name(RiskLevel, dc.deviceRisk)}` }, name(RiskLevel, dc.deviceRisk)),
        h("td", null, dc.reason))));
  };
  const refreshBlocked = async () => {
    const after = timestampFromDate(new Date(Date.now() - 3600_000));
    const n = (await pages(async (pageToken) => {
      const r = await access.listSignIns({ pageSize: 1000, pageToken, decision: Decision.BLOCK, after }, { signal });
      return { items: r.signIns, next: r.nextPageToken };
    }, 10000)).length;
    replace(blocked, h("h2", null, "Blocked sign-ins"), h("div", { class: "num", "data-count": "blocked-signins" }, n), h("span", { class: "muted" }, "last hour"), " ", link("/signins", "sign-in log"));
  };
  const showPending = () => replace(approvals, h("h2", null, "Pending approvals"), h("div", { class: "num", "data-count": "pending" }, pending.size), link("/actions", "action center"));
  const feeds = new Map<Feed, FeedState>();
  const showLag = () => replace(lag, h("h2", null, "Feeds"), h("dl", null, [...feeds.entries()].map(([f, s]) => [
    h("dt", null, f), h("dd", { class: s.connected ? "good" : "bad" }, s.connected ? `${Math.max(0, Math.round((Date.now() - s.lastMessage) / 1000))} s ago` : (s.error || "connecting")),
  ])));
  counts();
  showPending();
  showLag();
  void refreshBlocked().catch(() => replace(blocked, h("h2", null, "Blocked sign-ins"), h("p", { class: "muted" }, "not available")));
  const tick = setInterval(showLag, 1000);
  signal.addEventListener("abort", () => clearInterval(tick));

  let blockedTimer: ReturnType<typeof setTimeout> | undefined;
  watch(signal, { compliance: revision, investigation: 0n, risk: riskRev }, {
    compliance: (ev) => {
      if (ev.payload.case !== "deviceComplianceChanged") return;
      const dc = ev.payload.value.deviceCompliance;
      if (!dc) return;
      states.set(dc.deviceId, dc);
      counts();
      clearTimeout(blockedTimer);
      blockedTimer = setTimeout(() => void refreshBlocked().catch(() => undefined), 500);
    },
    investigation: (ev) => {
      if (ev.payload.case !== "actionChanged" || !ev.payload.value.action) return;
      const a = ev.payload.value.action;
      if (a.state === ActionState.PENDING_APPROVAL) pending.set(a.actionId, a.deviceId);
      else pending.delete(a.actionId);
      showPending();
    },
    state: (f, s) => { feeds.set(f, { ...s }); showLag(); },
  });
}
