// The end user's "why am I blocked" page: plain words, no policy names or alert details;
// a live status that turns to "access restored" when the block lifts.
import { h, replace } from "../dom";
import { access, compliance, devices, directory, remediation, errorText } from "../api";
import { watch } from "../live";
import { ComplianceState, RiskLevel } from "@gen/condaccess/common/v1/common_pb";
import { Decision, type SignIn } from "@gen/condaccess/access/v1/access_pb";
import { InvestigationState } from "@gen/condaccess/remediation/v1/remediation_pb";
import type { DeviceCompliance } from "@gen/condaccess/compliance/v1/compliance_pb";

const MAX_SCAN = 20000;

async function findSignIn(ref: string, signal: AbortSignal): Promise<SignIn | undefined> {
  let token = "", scanned = 0;
  do {
    const r = await access.listSignIns({ pageSize: 1000, pageToken: token, decision: Decision.BLOCK }, { signal });
    const s = r.signIns.find((x) => x.signInId === ref);
    if (s) return s;
    scanned += r.signIns.length;
    token = r.nextPageToken;
  } while (token !== "" && scanned < MAX_SCAN);
  return undefined;
}

/** problems turns a compliance result into categories in plain words. */
function problems(dc: DeviceCompliance | undefined): string[] {
  if (!dc) return ["This device has not been checked yet."];
  const out = new Set<string>();
  if (dc.deviceRisk >= RiskLevel.MEDIUM || dc.riskAlertIds.length > 0) out.add("A threat was found on this device.");
  for (const p of dc.policies) for (const s of p.settings) {
    if (s.compliant) continue;
    if (s.setting === "min_os_version") out.add(`The operating system needs an update (at least ${s.expected.replace(/ or later$/, "")}).`);
    else if (s.setting === "platforms") out.add("This kind of device is not allowed for this app.");
    else if (s.setting !== "max_device_risk") out.add("This device does not meet a security requirement.");
  }
  if (out.size === 0 && dc.state !== ComplianceState.COMPLIANT) out.add("This device does not meet the security requirements.");
  return [...out];
}

export async function blockedPage(root: HTMLElement, signal: AbortSignal, ref: string): Promise<void> {
  root.classList.add("enduser");
  const page = (...c: (Node | string | null)[]) => replace(root, h("h1", null, "Access blocked"), ...c);
  if (!ref) { page(h("p", null, "This page explains why an app blocked your access. Open it from the link the app gave you.")); return; }
  page(h("p", { class: "muted" }, "Looking up your sign-in…"));
  let s: SignIn | undefined;
  try { s = await findSignIn(ref, signal); } catch (err) { page(h("p", { class: "error", role: "alert" }, `We could not look up your sign-in (${errorText(err)}).`)); return; }
  if (!s) { page(h("p", null, "We could not find this sign-in. It may be old; try the app again.")); return; }
  const sign = s;
  let name = sign.deviceId;
  try { name = (await devices.getDevice({ deviceId: sign.deviceId }, { signal })).device?.displayName || name; } catch { /* keep the id */ }
  let app = sign.applicationId;
  try { app = (await directory.getApplication({ applicationId: app }, { signal })).application?.displayName || app; } catch { /* keep the id */ }

  const what = h("ul", { id: "problems" });
  const next = h("p", { id: "next" });
  const status = h("div", { class: "status blocked", id: "status", role: "status", "aria-live": "polite", "data-status": "blocked" },
    h("strong", null, "Still blocked."), " This page updates by itself.");
  replace(root, h("h1", null, "Access blocked"),
    h("p", null, "Your access to ", h("strong", { id: "app" }, app), " from the device ", h("strong", { id: "device" }, name), " was blocked to keep company data safe. You can keep using the device."),
    h("h2", null, "What is wrong"), what, h("h2", null, "What happens next"), next, status);

  let restored = false;
  let seenRev = 0n; // the newest compliance event of this device the page has seen
  let lagRetries = 0;
  const recheck = async () => {
    if (restored) return;
    const [dc, inv, actual] = await Promise.all([
      compliance.getDeviceCompliance({ deviceId: sign.deviceId }, { signal }).then((r) => r.deviceCompliance, () => undefined),
      remediation.listInvestigations({ deviceId: sign.deviceId, pageSize: 20 }, { signal }).then((r) => r.investigations, () => []),
      access.whatIf({ request: { userId: sign.userId, deviceId: sign.deviceId, applicationId: sign.applicationId } }, { signal }).then((r) => r.actual, () => undefined),
    ]);
    const decision = actual?.decision;
    // The access service applies compliance events on its own feed: until it has
    // applied the latest one this page saw, ask again shortly (bounded).
    if ((actual?.deviceCompliance?.revision ?? 0n) < seenRev && lagRetries < 40) {
      lagRetries++;
      setTimeout(() => void recheck(), Math.min(50 * lagRetries, 1000));
    } else {
      lagRetries = 0;
    }
    replace(what, problems(dc).map((p) => h("li", null, p)));
    const running = inv.some((i) => i.state === InvestigationState.RUNNING);
    const waiting = inv.some((i) => i.state === InvestigationState.PENDING_APPROVAL);
    next.textContent = running ? "The problem is being removed automatically. Access returns by itself when it is fixed."
      : waiting ? "A fix is ready and waits for your security team to approve it. Access returns by itself when it is fixed."
        : "Your IT or security team has been told. Access returns by itself when the device is fixed.";
    if (decision === Decision.ALLOW) {
      restored = true;
      status.className = "status restored";
      status.setAttribute("data-status", "restored");
      replace(status, h("strong", null, "Access restored."), " Reload the app to continue.");
      replace(what, h("li", null, "Nothing any more: the device was fixed."));
      next.textContent = "";
    }
  };
  // The revision first, then the state: a change in between still arrives on the feed.
  const rev = (await compliance.listDeviceCompliance({ pageSize: 1 }, { signal })).revision;
  await recheck();
  let t: ReturnType<typeof setTimeout> | undefined;
  const soon = () => { clearTimeout(t); t = setTimeout(() => void recheck(), 50); };
  watch(signal, { compliance: rev, investigation: 0n }, {
    compliance: (e) => {
      if (e.payload.case === "deviceComplianceChanged" && e.payload.value.deviceCompliance?.deviceId === sign.deviceId) {
        if (e.revision > seenRev) seenRev = e.revision;
        soon();
      }
    },
    investigation: (e) => {
      const d = e.payload.case === "investigationChanged" ? e.payload.value.investigation?.deviceId : e.payload.case === "actionChanged" ? e.payload.value.action?.deviceId : undefined;
      if (d === sign.deviceId) soon();
    },
  });
}
