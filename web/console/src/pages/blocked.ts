// The end user's "why am I blocked" page. It needs no sign-in: it asks only
// GetBlockedStatus's stream (WatchBlockedStatus) with the sealed reference of the 403
// link, which says no more than --blocked-page-detail allows (never policy names or
// reasons), and turns to "access restored" by itself when the stream says so.
import { h, replace } from "../dom";
import { access, isCode, errorText } from "../api";
import { Code } from "@connectrpc/connect";
import { BlockedProblem, BlockedRemediation, type BlockedStatus } from "@gen/condaccess/access/v1/access_pb";

const words: Record<number, string> = {
  [BlockedProblem.THREAT]: "A threat was found on this device.",
  [BlockedProblem.OS_VERSION]: "The operating system needs an update.",
  [BlockedProblem.PLATFORM]: "This kind of device is not allowed for this app.",
  [BlockedProblem.REQUIREMENT]: "This device does not meet a security requirement.",
  [BlockedProblem.DEVICE_UNKNOWN]: "This device is not known yet, or has not been checked yet.",
  [BlockedProblem.SIGN_IN]: "The sign-in itself does not meet the requirements (not the device).",
};

const next: Record<number, string> = {
  [BlockedProblem.THREAT]: "The threat is handled by your security team, automatically where they allow it. Access returns by itself when it is removed.",
  [BlockedProblem.OS_VERSION]: "Install the latest operating system updates. Access returns by itself once the device reports the new version.",
  [BlockedProblem.DEVICE_UNKNOWN]: "Make sure the device is enrolled with your organization. Access returns by itself once it has been checked.",
  [BlockedProblem.SIGN_IN]: "Contact your IT help desk with the reference below.",
};

// What happens to a threat, when the status says (category and full detail).
const remediation: Record<number, string> = {
  [BlockedRemediation.AUTOMATIC]: "The threat is being removed automatically. Access returns by itself when it is gone; you do not need to do anything.",
  [BlockedRemediation.WAITING_FOR_APPROVAL]: "Removing the threat is waiting for approval by your security team. Access returns by itself once they have approved it and it is removed.",
  [BlockedRemediation.NONE]: "Nothing is removing the threat automatically. Contact your IT help desk and mention this page.",
  [BlockedRemediation.DONE]: "The threat was removed. Access returns by itself in a moment, once the device has been checked again.",
};

export async function blockedPage(root: HTMLElement, signal: AbortSignal, ref: string): Promise<void> {
  root.classList.add("enduser");
  const title = h("h1", null, "Access blocked");
  if (!ref) { replace(root, title, h("p", null, "This page explains why an app blocked your access. Open it from the link the app gave you.")); return; }
  const intro = h("p", null, "Looking up your sign-in…");
  const what = h("ul", { id: "problems" });
  const then = h("p", { id: "next" });
  const status = h("div", { class: "status blocked", id: "status", role: "status", "aria-live": "polite" });
  replace(root, title, intro);

  const show = (s: BlockedStatus) => {
    const device = s.deviceId ? h("strong", { id: "device" }, s.deviceId) : null;
    const app = s.applicationDisplayName ? h("strong", { id: "app" }, s.applicationDisplayName) : "an app";
    replace(intro, "Your access to ", app, device ? [" from the device ", device] : null,
      " was blocked to keep company data safe. You can keep using the device.");
    if (s.restored) {
      status.className = "status restored";
      status.setAttribute("data-status", "restored");
      replace(status, h("strong", null, "Access restored."), " Reload the app to continue.");
      replace(what, h("li", null, "Nothing any more: the problem was fixed."));
      then.textContent = "";
    } else {
      status.className = "status blocked";
      status.setAttribute("data-status", "blocked");
      replace(status, h("strong", null, "Still blocked."), " This page updates by itself.");
      replace(what, s.problems.length === 0 ? h("li", null, "Your organization's access requirements are not met.") : s.problems.map((p) => h("li", null, words[p] ?? words[BlockedProblem.REQUIREMENT])));
      then.textContent = remediation[s.remediation] ?? s.problems.map((p) => next[p]).find((x) => x) ?? "Your IT or security team has been told. Access returns by itself when the device is fixed.";
      then.setAttribute("data-remediation", BlockedRemediation[s.remediation] ?? "");
    }
    if (!root.contains(status)) {
      replace(root, title, intro, h("h2", null, "What is wrong"), what, h("h2", null, "What happens next"), then, status);
    }
  };

  // Follow the status; if the stream breaks (a restart, a proxy's idle timeout), open
  // it again after a pause that grows, while the page is open.
  for (let attempt = 0; !signal.aborted; attempt++) {
    try {
      for await (const m of access.watchBlockedStatus({ ref }, { signal })) {
        attempt = 0;
        if (m.status) show(m.status);
        if (m.status?.restored) return;
      }
    } catch (err) {
      if (signal.aborted) return;
      if (isCode(err, Code.NotFound) || isCode(err, Code.InvalidArgument)) {
        replace(root, title, h("p", { class: "error", role: "alert" }, "We could not find this sign-in. The link may be old or incomplete: try the app again."));
        return;
      }
      if (!root.contains(status)) {
        replace(root, title, h("p", { class: "error", role: "alert" }, `We could not look up your sign-in (${errorText(err)}). Trying again…`));
      }
    }
    await new Promise((r) => setTimeout(r, Math.min(1000 * 2 ** attempt, 30000)));
  }
}
