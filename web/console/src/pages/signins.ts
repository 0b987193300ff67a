// Sign-in log: filters, paged, per-policy detail.
import { h, link, replace, field, input, select } from "../dom";
import { access, name, when, fail } from "../api";
import { create } from "@bufbuild/protobuf";
import { Decision, EvaluateAccessResponseSchema } from "@gen/condaccess/access/v1/access_pb";
import { ComplianceState } from "@gen/condaccess/common/v1/common_pb";
import { result } from "./whatif";

export async function signInsPage(root: HTMLElement, signal: AbortSignal): Promise<void> {
  const user = input("user", "", "user id"), device = input("device", "", "device id"), app = input("app", "", "application id");
  const decision = select("decision", [["", "any decision"], [String(Decision.ALLOW), "ALLOW"], [String(Decision.BLOCK), "BLOCK"]]);
  const body = h("tbody");
  const msg = h("p", { role: "status", class: "muted" });
  const prev = h("button", { type: "button" }, "Previous page"), next = h("button", { type: "button" }, "Next page");
  const form = h("form", { class: "filters", role: "search" }, field("User", user), field("Device", device), field("Application", app), field("Decision", decision), h("button", { type: "submit", class: "primary" }, "Apply"));
  replace(root, h("h1", null, "Sign-ins"), form,
    h("table", { id: "signins" }, h("thead", null, h("tr", null, ["Time", "User", "Device", "Application", "Decision", "Device state", "Detail"].map((c) => h("th", { scope: "col" }, c)))), body),
    h("div", { class: "row" }, prev, next), msg);
  const tokens = [""];
  let ix = 0;
  const load = async () => {
    try {
      const r = await access.listSignIns({ pageSize: 50, pageToken: tokens[ix], userId: user.value.trim(), deviceId: device.value.trim(), applicationId: app.value.trim(), decision: Number(decision.value || 0) }, { signal });
      replace(body, r.signIns.length === 0 ? h("tr", null, h("td", { colspan: 7, class: "muted" }, "No sign-ins match.")) : r.signIns.map((s) => h("tr", { "data-signin": s.signInId },
        h("td", null, when(s.time)), h("td", null, s.userId), h("td", null, link(`/devices/${encodeURIComponent(s.deviceId)}`, s.deviceId)), h("td", null, s.applicationId),
        h("td", { class: name(Decision, s.decision) }, name(Decision, s.decision)), h("td", null, name(ComplianceState, s.complianceState)),
        h("td", null, h("details", null, h("summary", null, "policies"), result(create(EvaluateAccessResponseSchema, { decision: s.decision, reasons: s.reasons, policies: s.policies })), h("p", { class: "mono muted" }, `sign-in ${s.signInId} · trace ${s.traceId}`))))));
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
