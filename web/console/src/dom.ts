// Tiny DOM helpers: the console renders with plain DOM nodes (no framework).

type Child = Node | string | number | bigint | null | undefined | false | Child[];
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

/** h creates an element; attributes starting with "on" are event listeners. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs?: Attrs | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") {
        el.addEventListener(k.slice(2), v);
      } else if (v === true) {
        el.setAttribute(k, "");
      } else {
        el.setAttribute(k, String(v));
      }
    }
  }
  append(el, children);
  return el;
}

function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** replace swaps the children of el. */
export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

/**
 * reconcile makes el's children exactly children, in order, moving or removing only
 * what differs: a child that stays where it is is not touched, so a control in it
 * keeps its value and its focus (replace would take every child out and put it back).
 */
export function reconcile(el: Element, children: Element[]): void {
  children.forEach((c, i) => {
    const at = el.children[i];
    if (at !== c) el.insertBefore(c, at ?? null);
  });
  while (el.children.length > children.length) el.lastElementChild?.remove();
}

/**
 * KeyedRows keeps one table row per item, made again only when the item's etag
 * changed (or its row left the page): with reconcile, a live reload leaves the row of
 * an unchanged item, and what the user is choosing or typing in it, alone.
 */
export class KeyedRows<T> {
  private rows = new Map<string, { tr: HTMLTableRowElement; etag: string }>();
  constructor(private id: (t: T) => string, private etag: (t: T) => string, private make: (t: T) => HTMLTableRowElement) {}

  /** update returns the rows of items, in their order, and forgets the others. */
  update(items: T[]): HTMLTableRowElement[] {
    const next = new Map<string, { tr: HTMLTableRowElement; etag: string }>();
    for (const t of items) {
      const old = this.rows.get(this.id(t));
      next.set(this.id(t), old && old.etag === this.etag(t) && old.tr.isConnected ? old : { tr: this.make(t), etag: this.etag(t) });
    }
    this.rows = next;
    return [...next.values()].map((r) => r.tr);
  }
}

/** link is an in-app link handled by the router. */
export function link(href: string, ...children: Child[]): HTMLAnchorElement {
  return h("a", { href, "data-link": true }, ...children);
}

/** field is a labelled form control. */
export function field(label: string, control: HTMLElement): HTMLLabelElement {
  return h("label", { class: "field" }, h("span", null, label), control);
}

/** select builds a <select> from value/label pairs. */
export function select(name: string, options: [string, string][], value = ""): HTMLSelectElement {
  const s = h("select", { name });
  for (const [v, l] of options) {
    const o = h("option", { value: v }, l);
    if (v === value) o.selected = true;
    s.appendChild(o);
  }
  return s;
}

/** input builds a text <input>. */
export function input(name: string, value = "", placeholder = ""): HTMLInputElement {
  return h("input", { name, value, placeholder, type: "text", autocomplete: "off" });
}
