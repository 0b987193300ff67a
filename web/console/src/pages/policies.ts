// Compliance policies and Conditional Access policies: view, create and edit (read,
// modify, send back with the etag: a concurrent change shows as a conflict; lockout-guard
// refusals show inline), and switch a Conditional Access policy's state. Live: the
// tables follow WatchCompliancePolicies and WatchPolicies, so another admin's change
// shows without a reload.
import { Code } from "@connectrpc/connect";
import { h, replace, reconcile, KeyedRows, select, field, input } from "../dom";
import { compliancePolicies, caPolicies, name, errorText, isCode } from "../api";
import { Platform, RiskLevel } from "@gen/condaccess/common/v1/common_pb";
import { create, clone } from "@bufbuild/protobuf";
import { GrantControl, PolicyState, ConditionalAccessPolicySchema, UserAssignmentSchema, ApplicationAssignmentSchema, GrantControlsSchema, type ConditionalAccessPolicy } from "@gen/condaccess/access/v1/access_pb";
import { CompliancePolicySchema, PolicyAssignmentSchema, type CompliancePolicy } from "@gen/condaccess/compliance/v1/compliance_pb";

const list = (s: string) => s.split(",").map((x) => x.trim()).filter((x) => x !== "");

function failure(err: unknown): string {
  if (isCode(err, Code.Aborted)) return `Conflict: the policy changed since you opened it. Reload the page to see the change, then edit again. (${errorText(err)})`;
  return errorText(err);
}

export async function policiesPage(root: HTMLElement, signal: AbortSignal): Promise<void> {
  const editor = h("section", { id: "editor", "aria-live": "polite" });
  const tables = h("div", { id: "policy-tables" });
  // After a save: close the editor and list again (the streams would too, a moment later).
  const reload = () => { replace(editor); void refresh(); };

  const caForm = (p?: ConditionalAccessPolicy) => {
    const id = input("policyId", p?.policyId ?? ""), dn = input("displayName", p?.displayName ?? "");
    if (p) id.readOnly = true;
    const state = select("state", [PolicyState.ENABLED, PolicyState.REPORT_ONLY, PolicyState.DISABLED].map((s) => [String(s), name(PolicyState, s)]), String(p?.state ?? PolicyState.REPORT_ONLY));
    const users = input("users", p ? (p.users?.all ? "*" : p.users?.includeUsers.join(", ") ?? "") : "*", "* or user ids, comma-separated");
    const apps = input("apps", p ? (p.applications?.all ? "*" : p.applications?.include.join(", ") ?? "") : "", "* or application ids");
    const grant = select("grant", [["require", "grant with the checked controls"], ["block", "block"]], p?.grantControls?.block ? "block" : "require");
    // A new policy requires a compliant and a registered device (the device must be
    // healthy and belong to the user), like Entra's recommended device policy.
    const wanted = p ? (p.grantControls?.require ?? []) : [GrantControl.COMPLIANT_DEVICE, GrantControl.REGISTERED_DEVICE];
    const controls = [GrantControl.COMPLIANT_DEVICE, GrantControl.REGISTERED_DEVICE, GrantControl.MFA].map((c) => {
      const box = h("input", { type: "checkbox", name: "require", value: name(GrantControl, c) });
      box.checked = wanted.includes(c);
      return { c, box };
    });
    const labels: Record<number, string> = { [GrantControl.COMPLIANT_DEVICE]: "compliant device", [GrantControl.REGISTERED_DEVICE]: "registered device", [GrantControl.MFA]: "MFA" };
    const err = h("p", { class: "error", role: "alert" });
    const f = h("form", { class: "filters", "aria-label": p ? `Edit ${p.displayName}` : "New Conditional Access policy" },
      field("Policy id", id), field("Display name", dn), field("State", state), field("Users", users), field("Applications", apps), field("Grant", grant),
      h("fieldset", { class: "row" }, h("legend", null, "Required controls"), controls.map(({ c, box }) => h("label", null, box, " ", labels[c]))),
      h("button", { type: "submit", class: "primary" }, p ? "Save" : "Create"), h("button", { type: "button", onclick: () => replace(editor) }, "Cancel"));
    f.addEventListener("submit", async (e) => {
      e.preventDefault();
      const require = grant.value === "block" ? [] : controls.filter(({ box }) => box.checked).map(({ c }) => c);
      // Edit what was read (etag included), so the server can refuse a stale write.
      const policy = p ? clone(ConditionalAccessPolicySchema, p) : create(ConditionalAccessPolicySchema);
      policy.policyId = id.value.trim();
      policy.displayName = dn.value.trim();
      policy.state = Number(state.value);
      const u = policy.users ?? create(UserAssignmentSchema);
      u.all = users.value.trim() === "*";
      u.includeUsers = u.all ? [] : list(users.value);
      const a = policy.applications ?? create(ApplicationAssignmentSchema);
      a.all = apps.value.trim() === "*";
      a.include = a.all ? [] : list(apps.value);
      const g = policy.grantControls ?? create(GrantControlsSchema);
      g.block = grant.value === "block";
      g.require = require;
      policy.users = u;
      policy.applications = a;
      policy.grantControls = g;
      try {
        if (p) await caPolicies.updatePolicy({ policy });
        else await caPolicies.createPolicy({ policy });
        reload();
      } catch (e2) { err.textContent = failure(e2); }
    });
    replace(editor, h("h2", null, p ? `Edit ${p.displayName}` : "New Conditional Access policy"), f, err);
    dn.focus();
  };

  const cpForm = (p?: CompliancePolicy) => {
    const id = input("policyId", p?.policyId ?? ""), dn = input("displayName", p?.displayName ?? "");
    if (p) id.readOnly = true;
    const risk = select("maxDeviceRisk", [["0", "no risk limit"], ...[RiskLevel.NONE, RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH].map((r) => [String(r), name(RiskLevel, r)] as [string, string])], String(p?.maxDeviceRisk ?? 0));
    const os = input("minOsVersion", p?.minOsVersion ?? "", "e.g. 10.0.22631");
    const groups = input("groups", p ? (p.assignment?.allDevices ? "*" : p.assignment?.includeGroups.join(", ") ?? "") : "*", "* or groups");
    const err = h("p", { class: "error", role: "alert" });
    const f = h("form", { class: "filters", "aria-label": p ? `Edit ${p.displayName}` : "New compliance policy" },
      field("Policy id", id), field("Display name", dn), field("Maximum device risk", risk), field("Minimum OS version", os), field("Devices", groups),
      h("button", { type: "submit", class: "primary" }, p ? "Save" : "Create"), h("button", { type: "button", onclick: () => replace(editor) }, "Cancel"));
    f.addEventListener("submit", async (e) => {
      e.preventDefault();
      const policy = p ? clone(CompliancePolicySchema, p) : create(CompliancePolicySchema);
      policy.policyId = id.value.trim();
      policy.displayName = dn.value.trim();
      policy.maxDeviceRisk = Number(risk.value);
      policy.minOsVersion = os.value.trim();
      const asg = policy.assignment ?? create(PolicyAssignmentSchema);
      asg.allDevices = groups.value.trim() === "*";
      asg.includeGroups = asg.allDevices ? [] : list(groups.value);
      policy.assignment = asg;
      try {
        if (p) await compliancePolicies.updateCompliancePolicy({ policy });
        else await compliancePolicies.createCompliancePolicy({ policy });
        reload();
      } catch (e2) { err.textContent = failure(e2); }
    });
    replace(editor, h("h2", null, p ? `Edit ${p.displayName}` : "New compliance policy"), f, err);
    dn.focus();
  };

  const caRow = (p: ConditionalAccessPolicy): HTMLTableRowElement => {
    const state = select(`state-${p.policyId}`, [PolicyState.ENABLED, PolicyState.REPORT_ONLY, PolicyState.DISABLED].map((s) => [String(s), name(PolicyState, s)]), String(p.state));
    state.setAttribute("aria-label", `State of ${p.displayName}`);
    const err = h("span", { class: "error", role: "alert" });
    const save = h("button", { type: "button" }, "Save state");
    const tr = h("tr", { "data-policy": p.policyId },
      h("td", null, h("strong", null, p.displayName), h("br"), h("span", { class: "mono muted" }, p.policyId)),
      h("td", null, p.users?.all ? "all users" : (p.users?.includeUsers.join(", ") ?? "")),
      h("td", null, p.applications?.all ? "all apps" : (p.applications?.include.join(", ") ?? "")),
      h("td", null, p.grantControls?.block ? "block" : (p.grantControls?.require.map((g) => name(GrantControl, g)).join(" + ") ?? "")),
      h("td", null, h("div", { class: "row" }, state, save, h("button", { type: "button", "data-edit": p.policyId, onclick: () => caForm(p) }, "Edit"), err)));
    save.addEventListener("click", async () => {
      try {
        const r = await caPolicies.updatePolicy({ policy: { ...p, state: Number(state.value) }, updateMask: { paths: ["state"] } });
        if (r.policy) tr.replaceWith(caRow(r.policy));
      } catch (e) { err.textContent = failure(e); }
    });
    return tr;
  };
  const cpRow = (p: CompliancePolicy): HTMLTableRowElement => h("tr", { "data-compliance-policy": p.policyId, "data-etag": p.etag },
    h("td", null, h("strong", null, p.displayName), h("br"), h("span", { class: "mono muted" }, p.policyId)),
    h("td", null, p.maxDeviceRisk ? name(RiskLevel, p.maxDeviceRisk) : "–"), h("td", null, p.minOsVersion || "–"),
    h("td", null, p.platforms.map((x) => name(Platform, x)).join(", ") || "any"),
    h("td", null, p.assignment?.allDevices ? "all devices" : (p.assignment?.includeGroups.join(", ") ?? "")),
    h("td", null, h("button", { type: "button", onclick: () => cpForm(p) }, "Edit")));
  const cpBody = h("tbody"), caBody = h("tbody");
  replace(tables,
    h("h2", null, "Compliance policies"),
    h("table", { id: "compliance-policies" }, h("thead", null, h("tr", null, ["Policy", "Maximum device risk", "Minimum OS", "Platforms", "Assignment", ""].map((c) => h("th", { scope: "col" }, c)))), cpBody),
    h("button", { type: "button", onclick: () => cpForm() }, "New compliance policy"),
    h("h2", null, "Conditional Access policies"),
    h("table", { id: "ca-policies" }, h("thead", null, h("tr", null, ["Policy", "Users", "Applications", "Grant", "State"].map((c) => h("th", { scope: "col" }, c)))), caBody),
    h("button", { type: "button", id: "new-ca-policy", onclick: () => caForm() }, "New Conditional Access policy"));
  // Rows by policy and etag (KeyedRows, reconcile), so that a live reload caused by
  // another policy's change, or by this page's own, leaves what the user is doing in a
  // row alone (a state picked and not saved, a button about to be clicked).
  const cpRows = new KeyedRows<CompliancePolicy>((p) => p.policyId, (p) => p.etag, cpRow);
  const caRows = new KeyedRows<ConditionalAccessPolicy>((p) => p.policyId, (p) => p.etag, caRow);
  let listing = 0;
  const refresh = async () => {
    const n = ++listing;
    const [cp, ca] = await Promise.all([
      compliancePolicies.listCompliancePolicies({ pageSize: 500 }, { signal }),
      caPolicies.listPolicies({ pageSize: 500 }, { signal }),
    ]);
    if (n !== listing) return; // a newer listing is on its way
    reconcile(cpBody, cpRows.update(cp.policies));
    reconcile(caBody, caRows.update(ca.policies));
  };
  replace(root, h("h1", null, "Policies"), editor, tables);
  await refresh();
  // Live: list again (coalesced) whenever a stream reports a change after its snapshot.
  let pending: ReturnType<typeof setTimeout> | undefined;
  const changed = () => { clearTimeout(pending); pending = setTimeout(() => void refresh().catch(() => undefined), 50); };
  const follow = async (open: () => AsyncIterable<{ kind: { case: string | undefined } }>) => {
    for (let attempt = 0; !signal.aborted; attempt++) {
      let synced = false;
      try {
        for await (const m of open()) {
          attempt = 0;
          if (m.kind.case === "synced") { synced = true; changed(); } // catch up on what changed while disconnected
          else if (m.kind.case === "change" && synced) changed();
        }
      } catch { if (signal.aborted) return; }
      await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 15000)));
    }
  };
  void follow(() => compliancePolicies.watchCompliancePolicies({}, { signal }));
  void follow(() => caPolicies.watchPolicies({}, { signal }));
}
