// Live updates for a page: the Watch* server streams, shared by every console tab
// through a SharedWorker (see feeds.worker.ts), or opened by the page itself where
// shared workers are not available.
import type { RiskEvent } from "@gen/condaccess/risk/v1/risk_pb";
import type { ComplianceEvent } from "@gen/condaccess/compliance/v1/compliance_pb";
import type { SessionEvent } from "@gen/condaccess/access/v1/access_pb";
import type { InvestigationEvent } from "@gen/condaccess/remediation/v1/remediation_pb";
import { runFeed, type Feed, type FeedState } from "./feed";

export type { Feed, FeedState };

interface Handlers {
  risk?: (e: RiskEvent) => void;
  compliance?: (e: ComplianceEvent) => void;
  session?: (e: SessionEvent) => void;
  investigation?: (e: InvestigationEvent) => void;
  state?: (feed: Feed, s: FeedState) => void;
}

let worker: SharedWorker | undefined;
let nextId = 1;
const listeners = new Map<number, (m: { t: "ev"; ev: { revision: bigint } } | { t: "st"; st: FeedState }) => void>();

function shared(): SharedWorker | undefined {
  if (typeof SharedWorker === "undefined") return undefined;
  if (!worker) {
    worker = new SharedWorker(new URL("./feeds.worker.ts", import.meta.url), { type: "module", name: "condaccess-feeds" });
    worker.port.onmessage = (m: MessageEvent<{ t: "ev" | "st"; id: number; ev?: { revision: bigint }; st?: FeedState }>) => {
      const d = m.data;
      const l = listeners.get(d.id);
      if (!l) return;
      if (d.t === "ev" && d.ev) l({ t: "ev", ev: d.ev });
      else if (d.t === "st" && d.st) l({ t: "st", st: d.st });
    };
    worker.port.start();
    addEventListener("pagehide", () => { for (const id of listeners.keys()) worker?.port.postMessage({ t: "unsub", id }); });
  }
  return worker;
}

/** watch delivers the events of each feed in start after its revision until signal aborts. */
export function watch(signal: AbortSignal, start: Partial<Record<Feed, bigint>>, on: Handlers): void {
  for (const [feed, rev] of Object.entries(start) as [Feed, bigint][]) {
    const onEvent = (ev: { revision: bigint }) => dispatch(feed, ev, on);
    const onState = (s: FeedState) => on.state?.(feed, s);
    const w = shared();
    if (!w) {
      void runFeed(feed, rev, signal, onEvent, onState);
      continue;
    }
    const id = nextId++;
    listeners.set(id, (m) => (m.t === "ev" ? onEvent(m.ev) : onState(m.st)));
    w.port.postMessage({ t: "sub", id, feed, from: rev });
    signal.addEventListener("abort", () => {
      listeners.delete(id);
      w.port.postMessage({ t: "unsub", id });
    });
  }
}

function dispatch(feed: Feed, ev: unknown, on: Handlers): void {
  switch (feed) {
    case "risk": on.risk?.(ev as RiskEvent); break;
    case "compliance": on.compliance?.(ev as ComplianceEvent); break;
    case "session": on.session?.(ev as SessionEvent); break;
    case "investigation": on.investigation?.(ev as InvestigationEvent); break;
  }
}
