// Sign-in log: filters, paged, per-policy detail; new sign-ins appear at the top of
// the first page as they are recorded (WatchSignIns, same filters).
import { h, link, replace, field, input, select } from "../dom";
import { access, name, when, fail } from "../api";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { create } from "@bufbuild/protobuf";
import { Decision, EvaluateAccessResponseSchema, type SignIn, type SignInNotice } from "@gen/condaccess/access/v1/access_pb";
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
  const detail = (s: SignIn) => [result(create(EvaluateAccessResponseSchema, { decision: s.decision, reasons: s.reasons, policies: s.policies })), h("p", { class: "mono muted" }, `sign-in ${s.signInId} · trace ${s.traceId}`)];
  const row = (s: SignIn | SignInNotice, more: Node[] | (() => Promise<Node[]>)) => {
    const d = h("details", null, h("summary", null, "policies"));
    if (Array.isArray(more)) d.append(...more);
    else d.addEventListener("toggle", () => { if (d.open && d.childElementCount === 1) void more().then((n) => d.append(...n), (e) => d.append(h("p", { class: "error" }, String(e)))); });
    return h("tr", { "data-signin": s.signInId },
      h("td", null, when(s.time)), h("td", null, s.userId), h("td", null, link(`/devices/${encodeURIComponent(s.deviceId)}`, s.deviceId)), h("td", null, s.applicationId),
      h("td", { class: name(Decision, s.decision) }, name(Decision, s.decision)), h("td", null, name(ComplianceState, s.complianceState)), h("td", null, d));
  };
  // The whole sign-in of a notice: the one recorded at exactly its time.
  const whole = async (n: SignInNotice): Promise<Node[]> => {
    const t = n.time as Timestamp;
    const next = t.nanos === 999999999 ? { seconds: t.seconds + 1n, nanos: 0 } : { seconds: t.seconds, nanos: t.nanos + 1 };
    const r = await access.listSignIns({ pageSize: 10, userId: n.userId, deviceId: n.deviceId, applicationId: n.applicationId, after: t, before: next }, { signal });
    const s = r.signIns.find((x) => x.signInId === n.signInId);
    return s ? detail(s) : [h("p", { class: "muted" }, "Not found (deleted by retention?)")];
  };
  let live: AbortController | undefined;
  // catchUp lists the first page again and inserts at the top the sign-ins it has that
  // the page does not: those recorded after the page's listing but before its stream
  // reported (the stream sends only what is decided after its first heartbeat, and
  // the listing runs alongside it), or while a broken stream reconnected.
  const catchUp = async () => {
    try {
      const r = await access.listSignIns({ pageSize: 50, userId: user.value.trim(), deviceId: device.value.trim(), applicationId: app.value.trim(), decision: Number(decision.value || 0) }, { signal });
      if (ix !== 0) return;
      const missing = r.signIns.filter((s) => !body.querySelector(`tr[data-signin="${CSS.escape(s.signInId)}"]`));
      if (missing.length === 0) return;
      body.querySelector("td[colspan]")?.parentElement?.remove();
      for (const s of missing.reverse()) body.insertBefore(row(s, detail(s)), body.firstChild);
    } catch { /* the stream goes on; its next connection catches up again */ }
  };
  // follow inserts the sign-ins recorded from now on that match the filters; on each
  // connection's first message (the heartbeat that says the stream reports from then
  // on) it catches up.
  const follow = async (ctl: AbortController) => {
    for (let attempt = 0; !ctl.signal.aborted; attempt++) {
      try {
        let first = true;
        for await (const m of access.watchSignIns({ userId: user.value.trim(), deviceId: device.value.trim(), applicationId: app.value.trim(), decision: Number(decision.value || 0) }, { signal: ctl.signal })) {
          attempt = 0;
          if (first && ix === 0) void catchUp();
          first = false;
          if (m.kind.case !== "signIn" || ix !== 0) continue;
          const n = m.kind.value;
          if (body.querySelector(`tr[data-signin="${CSS.escape(n.signInId)}"]`)) continue;
          body.querySelector("td[colspan]")?.parentElement?.remove();
          body.insertBefore(row(n, () => whole(n)), body.firstChild);
        }
      } catch { if (ctl.signal.aborted) return; }
      await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 15000)));
    }
  };
  const load = async () => {
    live?.abort();
    const ctl = new AbortController();
    signal.addEventListener("abort", () => ctl.abort());
    live = ctl;
    replace(body);
    // Follow first, so that nothing recorded while the page loads is missed (a sign-in
    // in both is shown once).
    if (ix === 0) void follow(ctl);
    try {
      const r = await access.listSignIns({ pageSize: 50, pageToken: tokens[ix], userId: user.value.trim(), deviceId: device.value.trim(), applicationId: app.value.trim(), decision: Number(decision.value || 0) }, { signal });
      // Rows the stream inserted meanwhile, unless the listing has them too.
      const kept = [...body.querySelectorAll("tr[data-signin]")].filter((tr) => !r.signIns.some((s) => s.signInId === tr.getAttribute("data-signin")));
      replace(body, r.signIns.length === 0 && kept.length === 0 ? h("tr", null, h("td", { colspan: 7, class: "muted" }, "No sign-ins match.")) : [...kept, ...r.signIns.map((s) => row(s, detail(s)))]);
      if (r.nextPageToken) tokens[ix + 1] = r.nextPageToken;
      prev.disabled = ix === 0;
      next.disabled = r.nextPageToken === "";
      msg.textContent = ix === 0 ? "Page 1 · new sign-ins appear at the top as they are recorded" : `Page ${ix + 1}`;
    } catch (e) { fail(msg, e); }
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); tokens.length = 1; ix = 0; void load(); });
  prev.addEventListener("click", () => { if (ix > 0) { ix--; void load(); } });
  next.addEventListener("click", () => { if (tokens[ix + 1] !== undefined) { ix++; void load(); } });
  await load();
}
