// Live updates: the four Watch* server streams, reconnecting with backoff, each
// resuming after the last revision it delivered.
import { Code } from "@connectrpc/connect";
import { risk, compliance, access, remediation, isCode } from "./api";
import type { RiskEvent } from "@gen/condaccess/risk/v1/risk_pb";
import type { ComplianceEvent } from "@gen/condaccess/compliance/v1/compliance_pb";
import type { SessionEvent } from "@gen/condaccess/access/v1/access_pb";
import type { InvestigationEvent } from "@gen/condaccess/remediation/v1/remediation_pb";

export type Feed = "risk" | "compliance" | "session" | "investigation";

export interface FeedState {
  connected: boolean;
  lastMessage: number; // Date.now() of the last event or progress message
  revision: bigint;
  error: string;
}

interface Handlers {
  risk?: (e: RiskEvent) => void;
  compliance?: (e: ComplianceEvent) => void;
  session?: (e: SessionEvent) => void;
  investigation?: (e: InvestigationEvent) => void;
  state?: (feed: Feed, s: FeedState) => void;
}

type Stream<E> = AsyncIterable<{ kind: { case: "event"; value: E } | { case: "progress"; value: { revision: bigint } } | { case: undefined; value?: undefined } }>;

/** watch runs the feeds named in start (feed -> start revision) until signal aborts. */
export function watch(signal: AbortSignal, start: Partial<Record<Feed, bigint>>, on: Handlers): void {
  const open: Record<Feed, (rev: bigint) => Stream<unknown>> = {
    risk: (r) => risk.watchRiskEvents({ startRevision: r }, { signal }) as Stream<unknown>,
    compliance: (r) => compliance.watchComplianceEvents({ startRevision: r }, { signal }) as Stream<unknown>,
    session: (r) => access.watchSessionEvents({ startRevision: r }, { signal }) as Stream<unknown>,
    investigation: (r) => remediation.watchInvestigationEvents({ startRevision: r }, { signal }) as Stream<unknown>,
  };
  for (const [feed, rev] of Object.entries(start) as [Feed, bigint][]) {
    void run(feed, rev, open[feed], on, signal);
  }
}

async function run(feed: Feed, rev: bigint, open: (rev: bigint) => Stream<unknown>, on: Handlers, signal: AbortSignal): Promise<void> {
  const st: FeedState = { connected: false, lastMessage: 0, revision: rev, error: "" };
  let backoff = 250;
  while (!signal.aborted) {
    try {
      for await (const m of open(st.revision)) {
        st.connected = true;
        st.error = "";
        st.lastMessage = Date.now();
        backoff = 250;
        if (m.kind.case === "event") {
          const ev = m.kind.value as { revision: bigint };
          st.revision = ev.revision;
          dispatch(feed, ev, on);
        } else if (m.kind.case === "progress") {
          if (m.kind.value.revision > st.revision) st.revision = m.kind.value.revision;
        }
        on.state?.(feed, st);
      }
    } catch (err) {
      if (signal.aborted) return;
      st.error = isCode(err, Code.OutOfRange) ? "history compacted; reload the page" : String(err);
      if (isCode(err, Code.OutOfRange)) {
        st.connected = false;
        on.state?.(feed, st);
        return;
      }
    }
    st.connected = false;
    on.state?.(feed, st);
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 10000);
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
