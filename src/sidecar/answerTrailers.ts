// The trailers of a peer's answer written to the calling app (PROTOCOL.md §17.5): from the
// answer's metadata (an answer held whole) or from its stream's closing metadata (one that
// streamed), through the header filter. node sends them as HTTP/2 trailers, or on HTTP/1.1 after
// a chunked body (an answer with a length has nowhere to put them: they are dropped).
import type { ServerResponse } from "node:http"
import type { Meta } from "../protocol/mesh.ts"
import type { OnInvalidHeader } from "./headerFilter.ts"
import { trailersOf } from "./httpEnvelope.ts"

/** Adds the trailers `meta` carries to `res`, before its end; nothing when it carries none. */
export const addAnswerTrailers = (res: ServerResponse, meta: Meta | undefined, onInvalid: OnInvalidHeader | undefined): void => {
  const trailers = meta === undefined ? undefined : trailersOf(meta, onInvalid)
  if (trailers === undefined || trailers.length === 0) return
  // An object, as node's HTTP/2 response takes them; a repeated name keeps all its values.
  const fields: Record<string, string | Array<string>> = {}
  for (const [name, value] of trailers) {
    const prior = fields[name]
    fields[name] = prior === undefined ? value : Array.isArray(prior) ? [...prior, value] : [prior, value]
  }
  res.addTrailers(fields)
}
