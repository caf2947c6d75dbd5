// Whether a request is an event stream (a GET whose accept names text/event-stream, as EventSource
// sends it): it holds what it uses for as long as it lives, so both sides bound it (outbound.ts: A's
// stream places; appPool.ts: half of B's app pool). Both ask the same question of the same value, here.
// B also asks it of an answer's content-type (appPool.ts): a request nothing in whose head says it
// will last (a POST, a GET without accept) is an event stream once its answer says so.
// Media types are case-blind (RFC 9110 8.3.1): `Text/Event-Stream` is one too. Asked per GET on
// both hot paths: no regex and no lower-cased copy. The scan goes from hyphen to hyphen (one
// native indexOf; a browser's ~130-byte accept has one or none): measured on the bench machine,
// niced and loaded, 58-118 ns a call for Chrome's accept where the case-sensitive includes it
// replaces took 152-349 and a case-blind regex 320-590; 16-27 ns for "*/*".
const MEDIA = "text/event-stream"
const HYPHEN = MEDIA.indexOf("-")

/** `MEDIA` at `at` in `value`, its letters in any case. */
const mediaAt = (value: string, at: number): boolean => {
  for (let k = 0; k < MEDIA.length; k++) {
    const c = value.charCodeAt(at + k)
    const t = MEDIA.charCodeAt(k)
    // Only letters fold: `| 0x20` would also take a control byte for "/" or "-".
    if (c !== t && (t < 97 || t > 122 || (c | 0x20) !== t)) return false
  }
  return true
}

/**
 * Whether a header name is `lower` (a lower-case name) in any case (A forwards names as they came).
 * Compared by code, no allocation: the case-blind regex it replaces allocated 11 to 56 bytes per
 * call (by how V8 compiled the loop around it) for every 6-letter name but "accept" itself (pragma,
 * cookie, origin, Accept) of every GET, measured in loops of 1e6 calls with no GC in the window.
 */
const namesField = (name: string, lower: string): boolean => {
  if (name.length !== lower.length) return false
  if (name === lower) return true
  for (let k = 0; k < lower.length; k++) {
    const c = name.charCodeAt(k)
    const t = lower.charCodeAt(k)
    // `| 0x20` maps an upper-case letter onto its lower case: only where `lower` has a letter.
    if (c !== t && (t < 97 || t > 122 || (c | 0x20) !== t)) return false
  }
  return true
}

/** Whether a header name is `accept`, in any case. */
export const isAcceptName = (name: string): boolean => namesField(name, "accept")

/** Whether an accept value names text/event-stream, in any case. */
export const acceptsEventStream = (accept: string): boolean => {
  for (let h = accept.indexOf("-", HYPHEN); h !== -1; h = accept.indexOf("-", h + 1)) {
    if (mediaAt(accept, h - HYPHEN)) return true
  }
  return false
}

/** Whether a header name is `content-type`, in any case (asked of every answer head at B). */
export const isContentTypeName = (name: string): boolean => namesField(name, "content-type")

/** Whether a content-type value's media type is text/event-stream, in any case, with or without parameters. */
export const isEventStreamType = (value: string): boolean => {
  let at = 0
  while (value.charCodeAt(at) === 32 || value.charCodeAt(at) === 9) at++
  if (!mediaAt(value, at)) return false
  // The type ends there: parameters, spaces, or nothing (`text/event-streams` is another type).
  const next = value.charCodeAt(at + MEDIA.length)
  return Number.isNaN(next) || next === 59 || next === 32 || next === 9
}
