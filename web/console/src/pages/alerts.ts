// Alerts: filter, classify and resolve, comment; live from the risk stream.
import { h, link, replace, reconcile, KeyedRows, field, select, input } from "../dom";
import { risk, name, when, errorText, fail } from "../api";
import { watch } from "../live";
import { Severity } from "@gen/condaccess/common/v1/common_pb";
import { AlertStatus, AlertClassification, AlertDetermination, type Alert } from "@gen/condaccess/risk/v1/risk_pb";

const opts = (e: Record<number, string>, any: string): [string, string][] =>
  [["", any], ...Object.entries(e).filter(([k, v]) => !isNaN(Number(k)) && v !== "UNSPECIFIED").map(([k, v]) => [k, v] as [string, string])];

export async function alertsPage(root: HTMLElement, signal: AbortSignal): Promise<void> {
  const status = select("status", opts(AlertStatus, "any status"), String(AlertStatus.NEW));
  const sev = select("severity", opts(Severity, "any severity"));
  const dev = input("device", "", "device id");
  const body = h("tbody");
  const msg = h("p", { role: "status", class: "muted" });
  const form = h("form", { class: "filters", role: "search" }, field("Status", status), field("Minimum severity", sev), field("Device", dev), h("button", { type: "submit", class: "primary" }, "Apply"));
  replace(root, h("h1", null, "Alerts"), form, msg,
    h("table", { id: "alerts" }, h("thead", null, h("tr", null, ["Alert", "Device", "Severity", "Status", "Detected", "Classify and resolve"].map((c) => h("th", { scope: "col" }, c)))), body));

  const resolveForm = (a: Alert) => {
    if (a.status === AlertStatus.RESOLVED) return h("span", null, `${name(AlertClassification, a.classification)} by ${a.resolvedBy}`);
    const cls = select("classification", opts(AlertClassification, "classification…"));
    const det = select("determination", opts(AlertDetermination, "determination…"));
    const comment = input("comment", "", "comment");
    const err = h("span", { class: "error", role: "alert" });
    const f = h("form", { class: "row" }, field("Classification", cls), field("Determination", det), field("Comment", comment),
      h("button", { type: "submit" }, "Resolve"), h("button", { type: "button", onclick: () => void addComment() }, "Add comment"), err);
    const addComment = async () => {
      if (!comment.value.trim()) { err.textContent = "write a comment first"; return; }
      try { await risk.addAlertComment({ alertId: a.alertId, text: comment.value }); comment.value = ""; err.textContent = "comment added"; } catch (e) { err.textContent = errorText(e); }
    };
    f.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!cls.value) { err.textContent = "choose a classification"; return; }
      try {
        await risk.resolveAlert({ alertId: a.alertId, classification: Number(cls.value), determination: Number(det.value || 0), comment: comment.value });
        void load();
      } catch (e2) { err.textContent = errorText(e2); }
    });
    return f;
  };
  // Rows by alert and etag, so that the live reload another alert's change causes does
  // not wipe a resolution being written.
  const rows = new KeyedRows<Alert>((a) => a.alertId, (a) => a.etag, (a) => h("tr", { "data-alert": a.alertId, "data-etag": a.etag },
    h("td", null, h("strong", null, a.title), h("br"), h("span", { class: "mono muted" }, a.alertId)),
    h("td", null, link(`/devices/${encodeURIComponent(a.deviceId)}`, a.deviceId)),
    h("td", { class: `level-${name(Severity, a.severity)}` }, name(Severity, a.severity)),
    h("td", null, name(AlertStatus, a.status)), h("td", null, when(a.detectTime)), h("td", null, resolveForm(a))));
  const load = async () => {
    try {
      const r = await risk.listAlerts({ pageSize: 100, status: Number(status.value || 0), minSeverity: Number(sev.value || 0), deviceId: dev.value.trim() }, { signal });
      const trs = rows.update(r.alerts);
      if (trs.length === 0) replace(body, h("tr", null, h("td", { colspan: 6, class: "muted" }, "No alerts match.")));
      else reconcile(body, trs);
      msg.textContent = r.nextPageToken ? "Showing the first 100 alerts; narrow the filter for more." : "";
    } catch (e) { fail(msg, e); }
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); void load(); });
  const rev = (await risk.listDeviceRisks({ pageSize: 1 }, { signal })).revision;
  await load();
  let t: ReturnType<typeof setTimeout> | undefined;
  watch(signal, { risk: rev }, { risk: (ev) => { if (ev.payload.case === "alertChanged") { clearTimeout(t); t = setTimeout(() => void load(), 100); } } });
}
