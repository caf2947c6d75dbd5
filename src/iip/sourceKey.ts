// The source a peer's address counts as wherever a limit is kept per peer: the identity issuer's
// per-source limits (src/identity: issuerShares.ts, handshakeRate.ts, printed as `source` in its
// log lines) and the admin listeners' connections per client (src/admin/listenerLimits.ts). An
// IPv4 peer is its address. An IPv6 peer is its prefix, a /64 unless its caller says otherwise:
// an IPv6 host on a LAN can usually send from every address of its /64 (2^64 of them), so a limit
// per full IPv6 address bounds nothing there; but many Kubernetes networks give a node less than a
// /64 and put several nodes in one (EKS: a /80 a node, in the subnet's /64; Calico: /122 blocks;
// Cilium: a /120 a node), and there a /64 would be many nodes' pods, the issuer's per-source
// limits as good as global (its --ipv6-source-prefix says which). An IPv4-mapped IPv6 address
// (`::ffff:a.b.c.d`, what a dual-stack listener sees of an IPv4 peer) is that IPv4 address, so a
// peer counts the same on either kind of listener (not in the prefix all of IPv4 would share). A
// link-local address keeps its zone (`fe80::1%eth0`): fe80::/64 is every link's, and two
// interfaces are two links; a zone on a wider scope names nothing and is dropped. Pure; a text
// that is no IP address (node always gives one; "unknown" when it gives none) is its own key.

const hextet = /^[0-9a-f]{1,4}$/
const octet = /^(?:0|[1-9][0-9]{0,2})$/

/** Two hextets of a dotted IPv4 text, or undefined. */
const ipv4Hextets = (text: string): [number, number] | undefined => {
  const parts = text.split(".")
  if (parts.length !== 4 || !parts.every((part) => octet.test(part) && Number(part) <= 255)) return undefined
  const [a, b, c, d] = parts.map(Number) as [number, number, number, number]
  return [(a << 8) | b, (c << 8) | d]
}

/** The hextets of one side of a `::` (or of a whole address without one); a dotted IPv4 tail only where `tail` allows it. */
const hextetsOf = (text: string, tail: boolean): Array<number> | undefined => {
  if (text === "") return []
  const pieces = text.split(":")
  const out: Array<number> = []
  for (let i = 0; i < pieces.length; i++) {
    const piece = pieces[i]!
    if (tail && i === pieces.length - 1 && piece.includes(".")) {
      const pair = ipv4Hextets(piece)
      if (pair === undefined) return undefined
      out.push(...pair)
    } else if (hextet.test(piece)) out.push(parseInt(piece, 16))
    else return undefined
  }
  return out
}

/** The eight hextets of an IPv6 text (lower case, no zone), or undefined. */
const ipv6Hextets = (text: string): Array<number> | undefined => {
  const halves = text.split("::")
  if (halves.length > 2) return undefined
  if (halves.length === 1) {
    const all = hextetsOf(text, true)
    return all?.length === 8 ? all : undefined
  }
  const head = hextetsOf(halves[0]!, false)
  const tail = hextetsOf(halves[1]!, true)
  if (head === undefined || tail === undefined || head.length + tail.length > 7) return undefined
  return [...head, ...Array<number>(8 - head.length - tail.length).fill(0), ...tail]
}

/** The prefix lengths an IPv6 source may be counted by: from a /16 to the whole address. */
export const IPV6_SOURCE_PREFIX = { min: 16, max: 128, default: 64 } as const

/**
 * The key of a peer's address: `10.0.0.1` for IPv4 (and for `::ffff:10.0.0.1`), the prefix of
 * `ipv6PrefixBits` (IPV6_SOURCE_PREFIX) in its RFC 5952 form for IPv6 (`2001:db8:1:2::/64`; a
 * link-local one with its zone, `fe80::%eth0/64`).
 */
export const sourceKeyOf = (address: string, ipv6PrefixBits: number = IPV6_SOURCE_PREFIX.default): string => {
  if (!address.includes(":")) return address
  const percent = address.indexOf("%")
  const zone = percent === -1 ? "" : address.slice(percent)
  const groups = zone === "%" ? undefined : ipv6Hextets((percent === -1 ? address : address.slice(0, percent)).toLowerCase())
  if (groups === undefined) return address
  if (groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff) {
    return `${groups[6]! >> 8}.${groups[6]! & 0xff}.${groups[7]! >> 8}.${groups[7]! & 0xff}`
  }
  // fe80::/10: link-local, the one scope whose zone tells links apart.
  const linkLocal = (groups[0]! & 0xffc0) === 0xfe80
  for (let i = 0; i < 8; i++) {
    const kept = Math.min(16, Math.max(0, ipv6PrefixBits - 16 * i))
    groups[i] = groups[i]! & ((0xffff << (16 - kept)) & 0xffff)
  }
  return `${rfc5952(groups)}${linkLocal ? zone : ""}/${ipv6PrefixBits}`
}

/** Eight hextets as RFC 5952 prints them: lower case, the longest run of two or more zero hextets (the first of equal ones) as `::`. */
const rfc5952 = (groups: ReadonlyArray<number>): string => {
  let runAt = -1
  let runLength = 1
  for (let i = 0; i < 8;) {
    let end = i
    while (end < 8 && groups[end] === 0) end++
    if (end - i > runLength) {
      runAt = i
      runLength = end - i
    }
    i = end === i ? i + 1 : end
  }
  const hex = (from: number, to: number) => groups.slice(from, to).map((group) => group.toString(16)).join(":")
  return runAt === -1 ? hex(0, 8) : `${hex(0, runAt)}::${hex(runAt + runLength, 8)}`
}
