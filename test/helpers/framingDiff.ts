// The framing fuzz's differential check (test/sidecar/framing-fuzz.test.ts): the same case sent
// through the mesh and through nginx, each in front of its own raw app (framingPeers.ts). Where both
// forward a request, the app must read the same request from both: method, target, the client's own
// end-to-end fields, and (decoded) body. Which requests each forwards is each proxy's choice on
// bytes RFC 9112 lets it refuse; what a forwarded request says is not a choice.
import type { AppRequest } from "./framingPeers.ts"
import type { H1Message } from "./h1Stream.ts"

/** An answer a proxy gave: the app's request it answers, or the status of its own (or an unknown app request's). */
export type Answer = AppRequest | number

/**
 * The client's own end-to-end fields compared: the generator's x-* fields (and content-type, should
 * it send one). Not compared, as each hop rewrites or adds them by its role: Host (nginx sets its
 * upstream's name), Connection, TE, Upgrade, Keep-Alive (hop-by-hop, RFC 9110 §7.6.1),
 * Content-Length and Transfer-Encoding (the framing each hop chooses, RFC 9112 §6), Expect (answered
 * by the hop itself, RFC 9110 §10.1.1), Via and X-Forwarded-*, the mesh's iip-* and trace fields.
 * Nor trailers: nginx discards a request's (a recipient may, RFC 9110 §6.5.1).
 */
const compared = (name: string): boolean => (name.startsWith("x-") && !name.startsWith("x-forwarded-") && !name.startsWith("x-iip-")) || name === "content-type"

/**
 * The compared fields by name, each name's lines joined with ", " in order: a recipient may combine
 * a name's lines so (RFC 9110 §5.3), and the order of different names is not significant (§5.3).
 * "" when there are none.
 */
const fields = (flat: ReadonlyArray<string>): string => {
  const byName = new Map<string, Array<string>>()
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const name = flat[i]!.toLowerCase()
    if (!compared(name)) continue
    const values = byName.get(name) ?? []
    values.push(flat[i + 1]!)
    byName.set(name, values)
  }
  const named = [...byName].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([name, values]) => [name, values.join(", ")])
  return named.length === 0 ? "" : JSON.stringify(named)
}

const show = (text: string): string => JSON.stringify(text.length <= 200 ? text : `${text.slice(0, 200)}... (${text.length} characters)`)

/** What the comparisons covered, over a run's cases. */
export interface Coverage {
  /** Requests both proxies forwarded, compared. */
  requests: number
  /** Of them, with bodies both apps read to their end, compared byte for byte. */
  bodies: number
  /** Of them, with x-* fields compared. */
  fields: number
  /** Cases where both forwarded the first request and one then forwarded fewer (it refused, or stopped answering). */
  fewer: number
}

export const coverage = (): Coverage => ({ requests: 0, bodies: 0, fields: 0, fewer: 0 })

/**
 * Where the app read different requests from the two proxies for one case. `heads` are the requests
 * the client sent as llhttp reads them, the first `whole` of them whole (then one cut short). The
 * answers are in request order, so answer k of each is for the client's request k: the comparison
 * walks them while both forwarded the request. After a refusal or the last answer on either side
 * the rest is that proxy's way of recovering (a close, or reading on), no longer the same stream:
 * how many requests each forwarded is the accept/refuse question, counted in `fewer`, not compared.
 */
export const differences = (heads: ReadonlyArray<H1Message>, whole: number, mesh: ReadonlyArray<Answer>, nginx: ReadonlyArray<Answer>, covered: Coverage): Array<string> => {
  const out: Array<string> = []
  const forwarded = (answers: ReadonlyArray<Answer>) => {
    const k = answers.findIndex((answer) => typeof answer === "number")
    return k === -1 ? answers.length : k
  }
  const both = Math.min(forwarded(mesh), forwarded(nginx), heads.length)
  if (both > 0 && forwarded(mesh) !== forwarded(nginx)) covered.fewer++
  for (let k = 0; k < both; k++) {
    const a = (mesh[k] as AppRequest).message
    const b = (nginx[k] as AppRequest).message
    covered.requests++
    if (a.method !== b.method) out.push(`request ${k}: method ${a.method} through the mesh, ${b.method} through nginx`)
    if (a.url !== b.url) out.push(`request ${k}: target ${show(a.url)} through the mesh, ${show(b.url)} through nginx`)
    const fa = fields(a.headers)
    const fb = fields(b.headers)
    if (fa !== "" || fb !== "") covered.fields++
    if (fa !== fb) out.push(`request ${k}: fields ${fa || "(none)"} through the mesh, ${fb || "(none)"} through nginx`)
    // An upgrade's body and what follows are the new protocol's for the mesh; nginx, not told to
    // upgrade, reads on as HTTP/1.1 (a proxy need not forward Upgrade, RFC 9110 §7.8).
    if (heads[k]!.upgrade) break
    // Bodies both apps read to their end (one answered at its head may be given up), of a request the
    // client sent whole; nginx re-frames a chunked one with Content-Length: the decoded bytes compared.
    if (k < whole && (mesh[k] as AppRequest).complete && (nginx[k] as AppRequest).complete) {
      covered.bodies++
      if (!a.body.equals(b.body)) out.push(`request ${k}: a body of ${show(a.body.toString("latin1"))} through the mesh, ${show(b.body.toString("latin1"))} through nginx`)
    }
  }
  return out
}
