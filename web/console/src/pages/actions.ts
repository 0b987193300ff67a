// Action center: pending approvals with an expiry countdown (approve or reject with a
// comment), and the history (undo); live from the investigation stream.
import { h, link, replace, input, field } from "../dom";
import { remediation, name, when, date, errorText, fail } from "../api";
import { watch } from "../live";
import { ActionState, ActionType, type Action } from "@gen/condaccess/remediation/v1/remediation_pb";

function target(a: Action): string {
  const t = a.target?.kind;
  if (t?.case === "file") return t.value.path;
  if (t?.case === "process") return `${t.value.name} (pid ${t.value.pid})`;
  return "";
}

export async function actionsPage(root: HTMLElement, signal: AbortSignal): Promise<void> {
  const pendingBody = h("tbody");
  const historyBody = h("tbody");
  const msg = h("p", { role: "status", class: "muted" });
  replace(root, h("h1", null, "Action center"), msg,
    h("h2", null, "Pending approvals"),
    h("table", { id: "pending" }, h("thead", null, h("tr", null, ["Action", "Device", "Target", "Expires in", "Decision"].map((c) => h("th", { scope: "col" }, c)))), pendingBody),
    h("h2", null, "History"),
    h("table", { id: "history" }, h("thead", null, h("tr", null, ["Action", "Device", "Target", "State", "Decided by", "Updated", ""].map((c) => h("th", { scope: "col" }, c)))), historyBody));

  const decide = (a: Action, approve: boolean, comment: HTMLInputElement, err: HTMLElement) => async () => {
    try {
      if (approve) await remediation.approveAction({ actionId: a.actionId, comment: comment.value });
      else await remediation.rejectAction({ actionId: a.actionId, comment: comment.value });
      msg.textContent = `${approve ? "Approved" : "Rejected"} ${a.actionId}.`;
      void load();
    } catch (e) { err.textContent = errorText(e); }
  };
  const countdowns = new Map<string, [HTMLElement, Date]>();
  const pendingRows = new Map<string, HTMLTableRowElement>();
  const empty = h("tr", null, h("td", { colspan: 5, class: "muted" }, "Nothing waits for an approval."));
  const pendingRow = (a: Action): HTMLTableRowElement => {
    const comment = input("comment", "", "comment");
    const err = h("span", { class: "error", role: "alert" });
    const left = h("span");
    const exp = date(a.approvalExpireTime);
    if (exp) countdowns.set(a.actionId, [left, exp]);
    return h("tr", { "data-action": a.actionId },
      h("td", null, name(ActionType, a.type), h("br"), h("span", { class: "mono muted" }, a.actionId)),
      h("td", null, link(`/devices/${encodeURIComponent(a.deviceId)}`, a.deviceId)),
      h("td", { class: "mono" }, target(a)), h("td", null, left),
      h("td", null, h("div", { class: "row" }, field(`Comment on ${a.actionId}`, comment),
        h("button", { type: "button", class: "primary", "data-approve": a.actionId, onclick: decide(a, true, comment, err) }, "Approve"),
        h("button", { type: "button", "data-reject": a.actionId, onclick: decide(a, false, comment, err) }, "Reject"), err)));
  };
  const load = async () => {
    try {
      const [pending, history] = await Promise.all([
        remediation.listActions({ pageSize: 200, state: ActionState.PENDING_APPROVAL }, { signal }),
        remediation.listActions({ pageSize: 100 }, { signal }),
      ]);
      // Rows that stay pending stay in place (with what the admin typed into them).
      const now = new Set(pending.actions.map((a) => a.actionId));
      for (const [id, tr] of pendingRows) if (!now.has(id)) { tr.remove(); pendingRows.delete(id); }
      for (const a of pending.actions) {
        if (pendingRows.has(a.actionId)) continue;
        const tr = pendingRow(a);
        pendingRows.set(a.actionId, tr);
        pendingBody.appendChild(tr);
      }
      if (pendingRows.size === 0) { if (!empty.isConnected) pendingBody.appendChild(empty); } else empty.remove();
      replace(historyBody, history.actions.map((a) => {
        const err = h("span", { class: "error", role: "alert" });
        const undo = a.state === ActionState.SUCCEEDED && a.type === ActionType.QUARANTINE_FILE
          ? h("button", { type: "button", onclick: async () => {
            const c = prompt(`Undo ${a.actionId}: comment`);
            if (c === null) return;
            try { await remediation.undoAction({ actionId: a.actionId, comment: c }); void load(); } catch (e) { err.textContent = errorText(e); }
          } }, "Undo") : null;
        return h("tr", { "data-action": a.actionId, "data-state": name(ActionState, a.state) },
          h("td", null, name(ActionType, a.type), h("br"), h("span", { class: "mono muted" }, a.actionId)),
          h("td", null, link(`/devices/${encodeURIComponent(a.deviceId)}`, a.deviceId)),
          h("td", { class: "mono" }, target(a)), h("td", null, name(ActionState, a.state)),
          h("td", null, a.approval ? `${a.approval.decidedBy}${a.approval.comment ? ": " + a.approval.comment : ""}` : a.state === ActionState.PENDING_APPROVAL ? "–" : "automatic"),
          h("td", null, when(a.updateTime)), h("td", null, undo, err));
      }));
      tick();
    } catch (e) { fail(msg, e); }
  };
  const tick = () => {
    for (const [id, [el, exp]] of countdowns) {
      if (!pendingRows.has(id)) { countdowns.delete(id); continue; }
      const s = Math.max(0, Math.round((exp.getTime() - Date.now()) / 1000));
      const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
      el.textContent = s === 0 ? "expired" : d > 0 ? `${d} d ${hr} h ${m} min` : hr > 0 ? `${hr} h ${m} min` : `${m} min ${s % 60} s`;
    }
  };
  const timer = setInterval(tick, 1000);
  signal.addEventListener("abort", () => clearInterval(timer));
  await load();
  let t: ReturnType<typeof setTimeout> | undefined;
  watch(signal, { investigation: 0n }, { investigation: () => { clearTimeout(t); t = setTimeout(() => void load(), 100); } });
}
