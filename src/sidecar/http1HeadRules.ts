// Rules on an HTTP/1.1 request's head that node:http's server applies and the outbound listener
// keeps (http1Connection.ts reads each head with llhttp, then applies these): which Expect asks for
// 100-continue, how many header fields are kept, and when an Upgrade request is an ordinary one.
import { carriedProtocols, upgradeProtocols } from "./headerFilter.ts"

/** node:http's test of an Expect value. */
export const CONTINUE_EXPECTATION = /(?:^|\W)100-continue(?:$|\W)/i
/** node:http keeps this many header entries (a name and a value each) and drops the rest. */
export const MAX_HEADER_ENTRIES = 2000

/**
 * An upgrade request's protocols are h2c alone (its Upgrade values joined as its header record
 * joins them). The mesh never carries h2c (headerFilter.ts, carriedProtocols), so the request is
 * an ordinary one; a list that is not protocol tokens stays an upgrade (refused: bad_upgrade).
 * So does one whose Transfer-Encoding is not one field `chunked`: llhttp reads no body of an
 * upgrade in any other coding (where it refuses an ordinary request), and the request would travel
 * without it; as an upgrade that declares a body it is refused (bad_upgrade).
 */
export const asksOnlyH2c = (raw: ReadonlyArray<string>): boolean => {
  let value: string | undefined
  let codings = 0
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!
    if (name.length === 7 && name.toLowerCase() === "upgrade") value = value === undefined ? raw[i + 1]! : `${value}, ${raw[i + 1]!}`
    else if (name.length === 17 && name.toLowerCase() === "transfer-encoding" && (++codings > 1 || raw[i + 1]!.trim().toLowerCase() !== "chunked")) return false
  }
  const protocols = upgradeProtocols(value)
  return protocols !== undefined && carriedProtocols(protocols) === ""
}
