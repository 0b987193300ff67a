// Audit log: shown once the server offers an audit service.
import { h, replace } from "../dom";

export function auditPage(root: HTMLElement): void {
  replace(root, h("h1", null, "Audit log"),
    h("p", { role: "status" }, "The audit log is not available on this server yet."));
}
