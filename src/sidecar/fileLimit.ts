// The sidecar's connection caps against its process's open-file limit (`ulimit -n`, LimitNOFILE,
// a container's nofile), fitted once at start (src/cli/sidecar.ts) before any listener is bound.
// Every connection is a file descriptor, and the caps were chosen for a generous limit: the inbound
// listener's 1,000 (twice that with evicted ones still closing, plus 16 handshakes past it), the
// outbound's 8,192 app connections, the admin's 256 per listener, the app pool's 256 sockets and
// the inbound tunnels' 1,024 sockets to the app. Under a lower limit accept fails with EMFILE before
// any cap bites (libuv closes what it cannot take): a client holding idle connections to the
// inbound port then shut out honest peers, and a flood on any listener starved the others and the
// dials (to the app, to peers, DNS). Fitted, each cap gets its share of what the limit leaves: a
// flood meets its listener's cap, where its newcomers evict the idle (inbound, admin) or are refused
// (outbound), and the rest keep descriptors of their own.
import { readdirSync, readFileSync } from "node:fs"
import { pastLimit } from "../iip/server.ts"

/** The caps that cost descriptors, as configured or as fitted. */
export interface FileCaps {
  /** The inbound listener's connections (src/iip/server.ts maxConnections). */
  readonly inboundConnections: number
  /** The outbound listener's app connections (--max-app-connections). */
  readonly appConnections: number
  /** Each admin listener's connections (there are two). */
  readonly adminConnections: number
  /** Sockets the inbound side keeps to its app (--app-pool-size). */
  readonly appPoolSize: number
  /** Upgraded connections each side holds (--max-tunnels); each inbound one is a socket to the app. */
  readonly maxTunnels: number
}

/** Descriptors kept for what no cap counts: connections to peers, DNS lookups, files and watches. */
export const UNCOUNTED_RESERVE = 64

/** A fitted cap is never below this: a listener that takes nothing serves nobody. */
const LEAST_CAP = 2

/** Descriptors the caps can hold at once, besides the inbound's `pastLimit` handshakes past its cap. An inbound connection evicted while busy drains past the cap: at most the cap more. */
const descriptorsOf = (caps: FileCaps): number =>
  2 * caps.inboundConnections + caps.appConnections + 2 * caps.adminConnections + caps.appPoolSize + caps.maxTunnels

/**
 * `wanted` as it fits in `limit` descriptors with `open` already open: unchanged when it fits;
 * else every cap scaled by one factor (at least LEAST_CAP each), so their descriptors together fit
 * in what the limit leaves past `open` and UNCOUNTED_RESERVE (unless even the floors do not).
 */
export const fitToFileLimit = (wanted: FileCaps, limit: number, open: number): FileCaps => {
  const room = limit - open - UNCOUNTED_RESERVE - pastLimit
  const needed = descriptorsOf(wanted)
  if (needed <= room) return wanted
  // Caps raised to their floor take more than their share: the factor shrinks by what they overran
  // until the caps fit, or all are at the floor (a limit too low to fit even those).
  for (let share = Math.max(0, room) / needed;;) {
    const caps = scaledBy(wanted, share)
    const over = descriptorsOf(caps) - room
    if (over <= 0 || share === 0) return caps
    share = Math.max(0, share - over / needed)
  }
}

const scaledBy = (wanted: FileCaps, share: number): FileCaps => {
  const scaled = (cap: number) => Math.max(LEAST_CAP, Math.floor(cap * share))
  return {
    inboundConnections: scaled(wanted.inboundConnections),
    appConnections: scaled(wanted.appConnections),
    adminConnections: scaled(wanted.adminConnections),
    appPoolSize: scaled(wanted.appPoolSize),
    maxTunnels: scaled(wanted.maxTunnels)
  }
}

/**
 * This process's open-file limit (the soft one, which node raised to the hard one at start) and
 * the descriptors open now, from /proc (Linux); undefined where /proc does not say (no fitting then).
 */
export const readFileLimit = (): { readonly limit: number; readonly open: number } | undefined => {
  try {
    const line = /^Max open files\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "latin1"))
    if (line === null) return undefined
    // The listing's own descriptor is among the entries: counted, it is a descriptor of slack.
    return { limit: Number(line[1]), open: readdirSync("/proc/self/fd").length }
  } catch {
    return undefined
  }
}
