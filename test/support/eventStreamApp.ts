// An HTTP/1.1 app whose /events answers with an event stream that never ends, and the two reads
// the event-stream tests make of a mesh in front of it (event-stream-share.test.ts,
// event-stream-answer.test.ts).
import type * as http from "node:http"
import type { Cleanup } from "./iipRaw.ts"
import { call, type RunningSidecar, startApp } from "./sidecarHarness.ts"

/**
 * An app whose /events answers any method with one event (as `contentType`) and holds the stream
 * open, and whose other paths `other` answers ("plain"); `ended`: event streams it saw end.
 */
export const startEventsApp = async (
  cleanup: Cleanup,
  options: { readonly other?: http.RequestListener; readonly contentType?: string } = {}
) => {
  const { other = (_, res) => res.end("plain"), contentType = "text/event-stream" } = options
  const ended = { events: 0 }
  const app = await startApp(cleanup, (req, res) => {
    if (req.url !== "/events") return other(req, res)
    req.resume()
    res.on("close", () => ended.events++)
    res.writeHead(200, { "content-type": contentType })
    res.write("data: hi\n\n")
  })
  return { address: app.address, ended }
}

/** The value of the first line of a sidecar's metrics matching `pattern` (0: none). */
export const metric = async (sidecar: RunningSidecar, pattern: RegExp): Promise<number> => {
  const { body } = await sidecar.sidecar.telemetry.metrics.text()
  const line = body.split("\n").find((l) => pattern.test(l))
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1))
}

/** `count` plain GETs to catalog through A at once, each with a 3 s deadline. */
export const plainGets = (port: number, count: number) =>
  Promise.all(Array.from({ length: count }, () => call(port, { path: "/items", headers: { host: "catalog", "iip-timeout": "3000" }, timeoutMs: 5000 })))
