// What If: evaluate a sign-in without recording it; per-policy results and reasons.
import { h, replace, field, input, select } from "../dom";
import { access, name, errorText } from "../api";
import { Decision, PolicyResultKind, PolicyState, GrantControl, CauseKind, type EvaluateAccessResponse } from "@gen/condaccess/access/v1/access_pb";
import { ComplianceState, RiskLevel } from "@gen/condaccess/common/v1/common_pb";

const pretend = (e: Record<number, string>, label: string): [string, string][] =>
  [["", label], ...Object.entries(e).filter(([k, v]) => !isNaN(Number(k)) && v !== "UNSPECIFIED").map(([k, v]) => [k, v] as [string, string])];

export function result(r: EvaluateAccessResponse | undefined): HTMLElement {
  if (!r) return h("p", null, "–");
  return h("div", null,
    h("p", null, "Decision: ", h("strong", { class: name(Decision, r.decision), "data-decision": name(Decision, r.decision) }, name(Decision, r.decision))),
    h("ul", null, r.reasons.map((x) => h("li", null, h("code", null, x.code), " ", x.message))),
    r.causeChain.length ? h("div", null, h("h3", null, "Cause chain"), h("ol", { class: "timeline" }, r.causeChain.map((c) => h("li", null, h("strong", null, name(CauseKind, c.kind)), " ", c.description, c.id ? h("span", { class: "pill mono" }, c.id) : null)))) : null,
    h("table", null, h("thead", null, h("tr", null, ["Policy", "State", "Result", "Unsatisfied", "Not applied because"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", null, r.policies.map((p) => h("tr", null, h("td", null, p.displayName || p.policyId), h("td", null, name(PolicyState, p.state)),
        h("td", null, name(PolicyResultKind, p.result)), h("td", null, p.unsatisfiedControls.map((g) => name(GrantControl, g)).join(", ")), h("td", null, p.notAppliedReason))))));
}

export function whatIfPage(root: HTMLElement): void {
  const user = input("user", "", "u-1"), device = input("device", "", "dev-1"), app = input("app", "", "payroll");
  const state = select("complianceState", pretend(ComplianceState, "as it is"));
  const risk = select("deviceRisk", pretend(RiskLevel, "as it is"));
  const out = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "filters" }, field("User", user), field("Device", device), field("Application", app), field("Pretend compliance", state), field("Pretend device risk", risk), h("button", { type: "submit", class: "primary" }, "Evaluate"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await access.whatIf({
        request: { userId: user.value.trim(), deviceId: device.value.trim(), applicationId: app.value.trim() },
        overrides: { complianceState: Number(state.value || 0), deviceRisk: Number(risk.value || 0), draftPolicies: [] },
      });
      replace(out, h("h2", null, "Now"), result(r.actual),
        r.whatIf ? [h("h2", null, "What if"), result(r.whatIf), r.changes.length ? h("ul", null, r.changes.map((c) => h("li", null, c))) : null] : null);
    } catch (err) { replace(out, h("p", { class: "error", role: "alert" }, errorText(err))); }
  });
  replace(root, h("h1", null, "What If"), h("p", { class: "muted" }, "Evaluates the Conditional Access policies for a user, device and application without recording a sign-in."), form, out);
}
