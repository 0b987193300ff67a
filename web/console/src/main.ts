// The console's shell: routes (part of the interface), navigation, page lifecycle.
import "./style.css";
import { h, replace } from "./dom";
import { overview } from "./pages/overview";
import { devicesPage, devicePage } from "./pages/devices";
import { alertsPage } from "./pages/alerts";
import { actionsPage } from "./pages/actions";
import { policiesPage } from "./pages/policies";
import { whatIfPage } from "./pages/whatif";
import { signInsPage } from "./pages/signins";
import { eventsPage } from "./pages/events";
import { auditPage } from "./pages/audit";
import { blockedPage } from "./pages/blocked";
import { Code } from "@connectrpc/connect";
import { isCode, errorText } from "./api";

export type Page = (root: HTMLElement, signal: AbortSignal, arg: string) => void | Promise<void>;

const nav: [string, string][] = [
  ["/", "Overview"], ["/devices", "Devices"], ["/alerts", "Alerts"], ["/actions", "Action center"],
  ["/policies", "Policies"], ["/whatif", "What If"], ["/signins", "Sign-ins"], ["/events", "Live events"], ["/audit", "Audit log"],
];

function route(path: string): { page: Page; arg: string; title: string; bare: boolean } | undefined {
  const dev = /^\/devices\/([^/]+)$/.exec(path);
  if (dev) return { page: devicePage, arg: decodeURIComponent(dev[1]), title: "Device", bare: false };
  const table: Record<string, [Page, string]> = {
    "/": [overview, "Overview"], "/devices": [devicesPage, "Devices"], "/alerts": [alertsPage, "Alerts"],
    "/actions": [actionsPage, "Action center"], "/policies": [policiesPage, "Policies"], "/whatif": [whatIfPage, "What If"],
    "/signins": [signInsPage, "Sign-ins"], "/events": [eventsPage, "Live events"], "/audit": [auditPage, "Audit log"],
  };
  if (path === "/blocked") return { page: blockedPage, arg: new URLSearchParams(location.search).get("ref") ?? "", title: "Access blocked", bare: true };
  const t = table[path];
  return t ? { page: t[0], arg: "", title: t[1], bare: false } : undefined;
}

let current: AbortController | undefined;

// The signed-in person (console sign-in outside development mode), from GET
// /auth/session; null when there is no session (development mode, a certificate, or
// not signed in). Asked once per page load.
type Who = { subject: string; roles: string[] } | null;
const who: Promise<Who> = fetch("/auth/session", { credentials: "same-origin", headers: { Accept: "application/json" } })
  .then(async (r) => (r.ok ? ((await r.json()) as Who) : null))
  .catch(() => null);

/** account fills the header's account area: who is signed in and the sign-out button. */
async function account(el: HTMLElement): Promise<void> {
  const w = await who;
  if (!w) return;
  const out = h("button", { type: "button", id: "sign-out" }, "Sign out");
  out.addEventListener("click", async () => {
    out.disabled = true;
    // POST with the Connect header: the server refuses a sign-out without it (CSRF).
    const r = await fetch("/auth/logout", { method: "POST", credentials: "same-origin", headers: { "Connect-Protocol-Version": "1" } }).catch(() => null);
    if (r?.ok) {
      // A full load: the page now says "not signed in" with the sign-in link.
      location.assign(location.pathname + location.search);
      return;
    }
    out.disabled = false;
    el.appendChild(h("span", { class: "error", role: "alert" }, "Sign-out failed; try again."));
  });
  replace(el, h("span", { id: "who", title: w.roles.join(", ") }, w.subject), " ", out);
}

function render(): void {
  current?.abort();
  current = new AbortController();
  const app = document.getElementById("app")!;
  const r = route(location.pathname);
  const main = h("main", { id: "main", tabindex: "-1" });
  if (r?.bare) {
    replace(app, main);
  } else {
    const links = nav.map(([href, label]) => {
      const active = href === "/" ? location.pathname === "/" : location.pathname.startsWith(href);
      return h("li", null, h("a", { href, "data-link": true, "aria-current": active ? "page" : null }, label));
    });
    const acct = h("div", { class: "account" });
    void account(acct);
    replace(app,
      h("a", { href: "#main", class: "skip" }, "Skip to content"),
      h("header", null, h("span", { class: "brand" }, "condaccess"), h("nav", { "aria-label": "Console" }, h("ul", null, links)), acct),
      main);
  }
  document.title = `${r?.title ?? "Not found"} · condaccess`;
  if (!r) {
    replace(main, h("h1", null, "Page not found"));
    return;
  }
  const signal = current.signal;
  Promise.resolve(r.page(main, signal, r.arg)).catch((err: unknown) => {
    if (signal.aborted) return;
    const text = isCode(err, Code.PermissionDenied) ? `Your roles do not allow this page (${errorText(err)}).` : errorText(err);
    main.appendChild(h("p", { class: "error", role: "alert" }, text));
    if (isCode(err, Code.Unauthenticated)) {
      // A full navigation: the sign-in leaves the console for the identity provider.
      main.appendChild(h("p", null, h("a", { href: `/auth/login?next=${encodeURIComponent(location.pathname + location.search)}`, id: "sign-in" }, "Sign in")));
    }
  });
}

/** go navigates within the console without a reload. */
export function go(href: string): void {
  history.pushState(null, "", href);
  render();
  document.getElementById("main")?.focus({ preventScroll: true });
}

document.addEventListener("click", (e) => {
  const a = (e.target as Element | null)?.closest?.("a[data-link]") as HTMLAnchorElement | null;
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  go(a.getAttribute("href")!);
});
window.addEventListener("popstate", render);
// Leaving the console: end the page's own streams before the browser asks for the
// next document. Over HTTP/1.1 a browser has six connections per host; the shared
// feeds hold up to four, a page's own streams (policies, sign-ins) the rest, and they
// would otherwise close only once the next document has arrived, which then waits
// for a connection forever.
window.addEventListener("beforeunload", () => current?.abort());
render();
