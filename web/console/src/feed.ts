// One Watch* stream, reconnecting with backoff and resuming after the last revision it
// delivered.
import { Code } from "@connectrpc/connect";
import { risk, compliance, access, remediation, isCode } from "./api";

export type Feed = "risk" | "compliance" | "session" | "investigation";

export interface FeedState {
  connected: boolean;
  lastMessage: number; // Date.now() of the last event or progress message
  revision: bigint;
  error: string;
}

type Msg = { kind: { case: "event"; value: { revision: bigint } } | { case: "progress"; value: { revision: bigint } } | { case: undefined; value?: undefined } };

function open(feed: Feed, rev: bigint, signal: AbortSignal): AsyncIterable<Msg> {
  switch (feed) {
    case "risk": return risk.watchRiskEvents({ startRevision: rev }, { signal }) as AsyncIterable<Msg>;
    case "compliance": return compliance.watchComplianceEvents({ startRevision: rev }, { signal }) as AsyncIterable<Msg>;
    case "session": return access.watchSessionEvents({ startRevision: rev }, { signal }) as AsyncIterable<Msg>;
    case "investigation": return remediation.watchInvestigationEvents({ startRevision: rev }, { signal }) as AsyncIterable<Msg>;
  }
}

/** runFeed delivers the events of feed after rev until signal aborts. */
export async function runFeed(feed: Feed, rev: bigint, signal: AbortSignal, onEvent: (ev: { revision: bigint }) => void, onState: (s: FeedState) => void): Promise<void> {
  const st: FeedState = { connected: false, lastMessage: 0, revision: rev, error: "" };
  let backoff = 250;
  while (!signal.aborted) {
    try {
      for await (const m of open(feed, st.revision, signal)) {
        st.connected = true;
        st.error = "";
        st.lastMessage = Date.now();
        backoff = 250;
        if (m.kind.case === "event") {
          st.revision = m.kind.value.revision;
          onEvent(m.kind.value);
        } else if (m.kind.case === "progress" && m.kind.value.revision > st.revision) {
          st.revision = m.kind.value.revision;
        }
        onState(st);
      }
    } catch (err) {
      if (signal.aborted) return;
      if (isCode(err, Code.OutOfRange)) {
        st.connected = false;
        st.error = "history compacted; reload the page";
        onState(st);
        return;
      }
      st.error = String(err);
    }
    st.connected = false;
    onState(st);
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 10000);
  }
}
