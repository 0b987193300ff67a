// Compliance policies and Conditional Access policies: view, and switch a Conditional
// Access policy's state (etag conflicts and lockout-guard refusals shown inline).
import { h, replace, select } from "../dom";
import { compliancePolicies, caPolicies, name, errorText } from "../api";
import { Platform, RiskLevel } from "@gen/condaccess/common/v1/common_pb";
import { GrantControl, PolicyState, type ConditionalAccessPolicy } from "@gen/condaccess/access/v1/access_pb";

export async function policiesPage(root: HTMLElement, signal: AbortSignal): Promise<void> {
  const [cp, ca] = await Promise.all([
    compliancePolicies.listCompliancePolicies({ pageSize: 500 }, { signal }),
    caPolicies.listPolicies({ pageSize: 500 }, { signal }),
  ]);
  const caRow = (p: ConditionalAccessPolicy): HTMLTableRowElement => {
    const state = select(`state-${p.policyId}`, [PolicyState.ENABLED, PolicyState.REPORT_ONLY, PolicyState.DISABLED].map((s) => [String(s), name(PolicyState, s)]), String(p.state));
    state.setAttribute("aria-label", `State of ${p.displayName}`);
    const err = h("span", { class: "error", role: "alert" });
    const save = h("button", { type: "button" }, "Save");
    const tr = h("tr", { "data-policy": p.policyId },
      h("td", null, h("strong", null, p.displayName), h("br"), h("span", { class: "mono muted" }, p.policyId)),
      h("td", null, p.users?.all ? "all users" : (p.users?.includeUsers.join(", ") ?? "")),
      h("td", null, p.applications?.all ? "all apps" : (p.applications?.include.join(", ") ?? "")),
      h("td", null, p.grantControls?.block ? "block" : (p.grantControls?.require.map((g) => name(GrantControl, g)).join(" + ") ?? "")),
      h("td", null, h("div", { class: "row" }, state, save, err)));
    save.addEventListener("click", async () => {
      try {
        const r = await caPolicies.updatePolicy({ policy: { ...p, state: Number(state.value) }, updateMask: { paths: ["state"] } });
        if (r.policy) tr.replaceWith(caRow(r.policy));
      } catch (e) { err.textContent = errorText(e); }
    });
    return tr;
  };
  replace(root, h("h1", null, "Policies"),
    h("h2", null, "Compliance policies"),
    h("table", { id: "compliance-policies" }, h("thead", null, h("tr", null, ["Policy", "Maximum device risk", "Minimum OS", "Platforms", "Assignment"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", null, cp.policies.map((p) => h("tr", null,
        h("td", null, h("strong", null, p.displayName), h("br"), h("span", { class: "mono muted" }, p.policyId)),
        h("td", null, p.maxDeviceRisk ? name(RiskLevel, p.maxDeviceRisk) : "–"), h("td", null, p.minOsVersion || "–"),
        h("td", null, p.platforms.map((x) => name(Platform, x)).join(", ") || "any"),
        h("td", null, p.assignment?.allDevices ? "all devices" : (p.assignment?.includeGroups.join(", ") ?? "")))))),
    h("h2", null, "Conditional Access policies"),
    h("table", { id: "ca-policies" }, h("thead", null, h("tr", null, ["Policy", "Users", "Applications", "Grant", "State"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", null, ca.policies.map(caRow))));
}
