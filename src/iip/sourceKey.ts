// The source a peer's address counts as wherever a limit is kept per peer: the identity issuer's
// per-source limits (src/identity: issuerShares.ts, handshakeRate.ts, printed as `source` in its
// log lines) and the admin listeners' connections per client (src/admin/listenerLimits.ts). An
// IPv4 peer is its address. An IPv6 peer is its /64: Kubernetes gives a node a /64 of pod
// addresses, and any IPv6 host can usually send from every address of its /64 (2^64 of them), so
// a limit per full IPv6 address bounds nothing. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
// what a dual-stack listener sees of an IPv4 peer) is that IPv4 address, so a peer counts the
// same on either kind of listener (not in the /64 all of IPv4 would share). A link-local address
// keeps its zone (`fe80::1%eth0`): fe80::/64 is every link's, and two interfaces are two links;
// a zone on a wider scope names nothing and is dropped. Pure; a text that is no IP address (node
// always gives one; "unknown" when it gives none) is its own key.

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

/**
 * The key of a peer's address: `10.0.0.1` for IPv4 (and for `::ffff:10.0.0.1`), the /64 in its
 * RFC 5952 form for IPv6 (`2001:db8:1:2::/64`; a link-local one with its zone, `fe80::%eth0/64`).
 */
export const sourceKeyOf = (address: string): string => {
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
  // The last 64 bits are zero, the longest run of zero hextets there can be (RFC 5952 4.2.3): it
  // takes in the zero hextets that end the first 64 bits, and becomes the `::`.
  let kept = 4
  while (kept > 0 && groups[kept - 1] === 0) kept--
  return `${groups.slice(0, kept).map((group) => group.toString(16)).join(":")}::${linkLocal ? zone : ""}/64`
}
