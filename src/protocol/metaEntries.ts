// Mesh metadata (mesh.ts's `Meta`) as the request path decodes and builds it: a message's first
// few entries in fields of one object. Every request made a Map at each sidecar each way (A built
// the request's and decoded the answer's, B the other two): ~185 bytes of hash table apiece and a
// hash lookup per read, for a request's four entries (:method, :authority, http-headers,
// deadline-ms) or an answer's two (:status, http-headers), where comparing up to four keys costs
// no more (issue 14). Past FIELDS entries (a peer's unusual or hostile block) it moves them into a
// Map, so no operation grows with the block. Entries keep their first-set order, a set of a key
// already there replaces its value: a Map's behaviour, as a ReadonlyMap to every reader of Meta.

/** Entries held in fields; the fifth distinct key moves them all into a Map. */
const FIELDS = 4

export class MetaEntries implements ReadonlyMap<string, string> {
  private count = 0
  private k0 = ""
  private v0 = ""
  private k1 = ""
  private v1 = ""
  private k2 = ""
  private v2 = ""
  private k3 = ""
  private v3 = ""
  /** Every entry once there were more than FIELDS (the fields are then unused). */
  private map: Map<string, string> | undefined = undefined

  get size(): number {
    return this.map === undefined ? this.count : this.map.size
  }

  /** Where `key` is among the fields (0-3), or -1. */
  private place(key: string): number {
    const n = this.count
    if (n > 0 && this.k0 === key) return 0
    if (n > 1 && this.k1 === key) return 1
    if (n > 2 && this.k2 === key) return 2
    if (n > 3 && this.k3 === key) return 3
    return -1
  }

  private valueAt(place: number): string {
    return place === 0 ? this.v0 : place === 1 ? this.v1 : place === 2 ? this.v2 : this.v3
  }

  private keyAt(place: number): string {
    return place === 0 ? this.k0 : place === 1 ? this.k1 : place === 2 ? this.k2 : this.k3
  }

  private put(place: number, key: string, value: string): void {
    if (place === 0) {
      this.k0 = key
      this.v0 = value
    } else if (place === 1) {
      this.k1 = key
      this.v1 = value
    } else if (place === 2) {
      this.k2 = key
      this.v2 = value
    } else {
      this.k3 = key
      this.v3 = value
    }
  }

  get(key: string): string | undefined {
    if (this.map !== undefined) return this.map.get(key)
    const place = this.place(key)
    return place === -1 ? undefined : this.valueAt(place)
  }

  has(key: string): boolean {
    return this.map === undefined ? this.place(key) !== -1 : this.map.has(key)
  }

  set(key: string, value: string): this {
    if (this.map !== undefined) {
      this.map.set(key, value)
      return this
    }
    const place = this.place(key)
    if (place !== -1) this.put(place, key, value)
    else if (this.count < FIELDS) this.put(this.count++, key, value)
    else {
      const map = this.toMap()
      map.set(key, value)
      this.map = map
    }
    return this
  }

  forEach(callback: (value: string, key: string, map: ReadonlyMap<string, string>) => void, thisArg?: unknown): void {
    // The count and each entry read as the walk reaches it, as a Map's forEach sees changes made during it.
    let walked = 0
    for (; this.map === undefined && walked < this.count; walked++) callback.call(thisArg, this.valueAt(walked), this.keyAt(walked), this)
    if (this.map === undefined) return
    // In a Map from the start, or moved into one by a set during the walk above (it keeps the
    // fields' order): its entries past those walked, read live as the Map's own walk would.
    for (const [key, value] of this.map) {
      if (walked > 0) walked--
      else callback.call(thisArg, value, key, this)
    }
  }

  // Iteration (tests, the admin side, a plain answer's merge) goes through a Map of the entries: rare.
  // Up to FIELDS entries that Map is a copy, so a set during the walk is not seen (a Map's iterator
  // would see it); nothing here sets while it iterates, and readers of a Meta cannot.
  entries(): MapIterator<[string, string]> {
    return this.toMap().entries()
  }

  keys(): MapIterator<string> {
    return this.toMap().keys()
  }

  values(): MapIterator<string> {
    return this.toMap().values()
  }

  [Symbol.iterator](): MapIterator<[string, string]> {
    return this.toMap().entries()
  }

  get [Symbol.toStringTag](): string {
    return "MetaEntries"
  }

  /** The entries as a Map: the one held past FIELDS, else a new one. */
  private toMap(): Map<string, string> {
    if (this.map !== undefined) return this.map
    const map = new Map<string, string>()
    for (let i = 0; i < this.count; i++) map.set(this.keyAt(i), this.valueAt(i))
    return map
  }
}
