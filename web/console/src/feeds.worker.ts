// One set of Watch* streams for every open console tab. Browsers allow six HTTP/1.1
// connections per host; a server stream holds one for as long as it runs, so tabs that
// each opened their own streams would starve one another (and their unary calls) on a
// plain-HTTP listener. This shared worker opens each feed once, from revision 0, keeps
// the events it has seen, and hands each subscriber the events after the revision it
// asks for, then the live ones.
import { runFeed, type Feed, type FeedState } from "./feed";

declare const self: SharedWorkerGlobalScope;

const KEEP = 50000; // events kept per feed; older ones are dropped (a subscriber then starts at the oldest kept)

interface Sub { port: MessagePort; id: number; from: bigint }
interface FeedBuf { events: { revision: bigint }[]; state: FeedState; subs: Sub[]; started: boolean }

const feeds = new Map<Feed, FeedBuf>();
const ctl = new AbortController();

function buf(feed: Feed): FeedBuf {
  let b = feeds.get(feed);
  if (!b) {
    b = { events: [], state: { connected: false, lastMessage: 0, revision: 0n, error: "" }, subs: [], started: false };
    feeds.set(feed, b);
  }
  if (!b.started) {
    b.started = true;
    const fb = b;
    void runFeed(feed, 0n, ctl.signal, (ev) => {
      fb.events.push(ev);
      if (fb.events.length > KEEP) fb.events.splice(0, fb.events.length - KEEP);
      for (const s of fb.subs) if (ev.revision > s.from) s.port.postMessage({ t: "ev", id: s.id, ev });
    }, (st) => {
      fb.state = { ...st };
      for (const s of fb.subs) s.port.postMessage({ t: "st", id: s.id, st: fb.state });
    });
  }
  return b;
}

self.onconnect = (e: MessageEvent) => {
  const port = e.ports[0];
  port.onmessage = (m: MessageEvent<{ t: "sub"; id: number; feed: Feed; from: bigint } | { t: "unsub"; id: number }>) => {
    const msg = m.data;
    if (msg.t === "sub") {
      const b = buf(msg.feed);
      const sub = { port, id: msg.id, from: msg.from };
      b.subs.push(sub);
      for (const ev of b.events) if (ev.revision > msg.from) port.postMessage({ t: "ev", id: msg.id, ev });
      port.postMessage({ t: "st", id: msg.id, st: b.state });
    } else {
      for (const b of feeds.values()) b.subs = b.subs.filter((s) => !(s.port === port && s.id === msg.id));
    }
  };
  port.start();
};
