// One set of Watch* streams for every open console tab. Browsers allow six HTTP/1.1
// connections per host; a server stream holds one for as long as it runs, so tabs that
// each opened their own streams would starve one another (and their unary calls) on a
// plain-HTTP listener. This shared worker opens each feed once, from the revision its
// first subscriber asks for, and keeps the events since then. A later subscriber that
// asks for older history gets it from a catch-up stream of its own that ends where the
// kept events begin (revisions have no gaps), then joins the shared stream.
import { runFeed, type Feed, type FeedState } from "./feed";

declare const self: SharedWorkerGlobalScope;

const KEEP = 50000; // events kept per feed; older ones are dropped and served by catch-up

type Ev = { revision: bigint };
interface Sub { port: MessagePort; id: number; last: bigint; ctl?: AbortController }
interface FeedBuf { events: Ev[]; floor: bigint; state: FeedState; subs: Sub[] }

const feeds = new Map<Feed, FeedBuf>();
const life = new AbortController();

const send = (s: Sub, ev: Ev) => {
  if (ev.revision <= s.last) return;
  s.last = ev.revision;
  s.port.postMessage({ t: "ev", id: s.id, ev });
};

function start(feed: Feed, from: bigint): FeedBuf {
  const b: FeedBuf = { events: [], floor: from, state: { connected: false, lastMessage: 0, revision: from, error: "" }, subs: [] };
  feeds.set(feed, b);
  void runFeed(feed, from, life.signal, (ev) => {
    b.events.push(ev);
    if (b.events.length > KEEP) {
      const drop = b.events.splice(0, b.events.length - KEEP);
      b.floor = drop[drop.length - 1].revision;
    }
    for (const s of b.subs) if (!s.ctl) send(s, ev);
  }, (st) => {
    b.state = { ...st };
    for (const s of b.subs) s.port.postMessage({ t: "st", id: s.id, st: b.state });
  });
  return b;
}

/** join hands s the kept events after its last revision, then the live ones. */
function join(b: FeedBuf, s: Sub): void {
  s.ctl = undefined;
  for (const ev of b.events) send(s, ev);
}

function subscribe(feed: Feed, s: Sub): void {
  const existing = feeds.get(feed);
  const b = existing ?? start(feed, s.last);
  b.subs.push(s);
  s.port.postMessage({ t: "st", id: s.id, st: b.state });
  if (!existing || s.last >= b.floor) {
    join(b, s);
    return;
  }
  // Catch up from s.last to the floor on a stream of its own, then join.
  const ctl = new AbortController();
  s.ctl = ctl;
  const done = () => { if (s.ctl === ctl) { ctl.abort(); join(b, s); } };
  void runFeed(feed, s.last, ctl.signal, (ev) => {
    if (s.ctl !== ctl) return;
    send(s, ev);
    if (ev.revision >= b.floor) done();
  }, (st) => { if (st.revision >= b.floor) done(); });
}

self.onconnect = (e: MessageEvent) => {
  const port = e.ports[0];
  port.onmessage = (m: MessageEvent<{ t: "sub"; id: number; feed: Feed; from: bigint } | { t: "unsub"; id: number }>) => {
    const msg = m.data;
    if (msg.t === "sub") {
      subscribe(msg.feed, { port, id: msg.id, last: msg.from });
      return;
    }
    for (const b of feeds.values()) {
      b.subs = b.subs.filter((s) => {
        const gone = s.port === port && s.id === msg.id;
        if (gone) s.ctl?.abort();
        return !gone;
      });
    }
  };
  port.start();
};
