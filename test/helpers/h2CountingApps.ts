// Apps behind sidecar B for the hostile-h2 reset tests (hostile-h2-held-reset, hostile-h2-rapid-reset):
// an HTTP/1.1 app and an h2c app that note each request begun, cut before its end (B reset or
// closed it), and read whole (then answered 200 with its body), so that a test can say what of a
// caller's reset requests reached the app; and the two sidecars in front of one, A's access log read.
import * as http from "node:http"
import * as http2 from "node:http2"
import { listenH2App } from "../support/h2AppListen.ts"
import type { Cleanup } from "../support/iipRaw.ts"
import { captureAccessLog, LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

/** What the app saw: requests (HTTP/1.1) or streams (h2c) begun, those cut before their end, those read whole. */
export interface AppView {
  readonly begun: Array<string>
  readonly cut: Array<string>
  readonly whole: Array<string>
}

export const emptyView = (): AppView => ({ begun: [], cut: [], whole: [] })

/** An app that reads each request's body to its end, then answers 200 with it. */
export const startHttp1App = async (cleanup: Cleanup, view: AppView): Promise<number> => {
  const server = http.createServer((req, res) => {
    const path = req.url ?? ""
    view.begun.push(path)
    const parts: Array<Buffer> = []
    req.on("data", (chunk: Buffer) => parts.push(chunk))
    req.on("end", () => {
      view.whole.push(path)
      res.end(Buffer.concat(parts))
    })
    req.on("close", () => (req.complete ? undefined : view.cut.push(path)))
  })
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve))
  cleanup.add(() => {
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return (server.address() as { port: number }).port
}

/** The same as an h2c app (node:http2): a stream B reset is cut ('aborted'). */
export const startH2App = async (cleanup: Cleanup, view: AppView): Promise<number> => {
  const server = http2.createServer()
  server.on("stream", (stream, headers) => {
    const path = String(headers[":path"])
    view.begun.push(path)
    const parts: Array<Buffer> = []
    stream.on("error", () => {})
    stream.on("aborted", () => view.cut.push(path))
    stream.on("data", (chunk: Buffer) => parts.push(chunk))
    stream.on("end", () => {
      if (stream.aborted) return
      view.whole.push(path)
      stream.respond({ ":status": 200 })
      stream.end(Buffer.concat(parts))
    })
  })
  return (await listenH2App(cleanup, server)).port
}

/** A's access-log record, as the reset tests read it. */
export interface AccessRecord {
  readonly uri: string
  readonly status: number
  readonly attempts: number
  readonly error?: { readonly hop: string; readonly reason: string }
}

/** A counting app of `appProtocol`, sidecar B (service catalog) in front of it, and sidecar A sending to B, its access log captured. */
export const startCountingMesh = async (cleanup: Cleanup, appProtocol: "http1" | "h2c"): Promise<{ view: AppView; a: RunningSidecar; b: RunningSidecar; access: Array<AccessRecord> }> => {
  const view = emptyView()
  const port = appProtocol === "http1" ? await startHttp1App(cleanup, view) : await startH2App(cleanup, view)
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `${LOOPBACK}:${port}`, appProtocol, tracing: false }))
  const access = captureAccessLog(cleanup, (line) => JSON.parse(line) as AccessRecord)
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", accessLog: true, tracing: false, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
  return { view, a, b, access }
}
