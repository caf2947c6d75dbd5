// The OTLP/HTTP exporter's agent with a deadline per exchange (src/telemetry/exportDeadline.ts)
// against collectors that answer: the deadline runs from a request taking a socket to the request
// giving it back, so keep-alive sockets reused export after export are never cut by an earlier
// export's deadline, an idle pooled socket is never cut, and no timer is left per export. Over
// https, the agent is still the one the exporter would have made from OTEL_EXPORTER_OTLP_CERTIFICATE.
// Synchronised on forceFlush (each export answered) and on the collector's requests.
import { SpanKind } from "@opentelemetry/api"
import { createHook } from "node:async_hooks"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import type { AddressInfo, Socket } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { TraceStore } from "../../src/telemetry/traceStore.ts"
import { makeTracing } from "../../src/telemetry/tracing.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { ipServerCertificate, makeTestPki } from "../support/testPki.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

/** A collector answering every export 200 `{}` once its body is in; it counts the connections it took and the exports it got. */
const collector = async (tls?: { readonly key: string; readonly cert: string }) => {
  const seen = { connections: 0, exports: 0, closed: 0 }
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    req.resume()
    req.on("end", () => {
      seen.exports++
      res.writeHead(200, { "content-type": "application/json" }).end("{}")
    })
  }
  const server = tls === undefined ? http.createServer(handler) : https.createServer(tls, handler)
  server.on(tls === undefined ? "connection" : "secureConnection", (socket: Socket) => {
    seen.connections++
    socket.on("close", () => seen.closed++)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
  cleanup.add(() => server.closeAllConnections())
  return { seen, url: `${tls === undefined ? "http" : "https"}://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

/** Tracing exporting to `url` over OTLP/HTTP (JSON) with a `timeoutMs` export timeout; the export errors it reports. */
const tracingTo = (url: string, timeoutMs: number) => {
  const errors: Array<string> = []
  const tracing = makeTracing({
    service: "catalog",
    store: new TraceStore(),
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: url, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_EXPORTER_OTLP_TIMEOUT: String(timeoutMs) },
    onExportError: (error) => errors.push(error.message)
  })
  cleanup.add(() => tracing.shutdown())
  /** One span, exported and answered. */
  const exportOne = async (name: string): Promise<void> => {
    tracing.spans!.end(tracing.spans!.start(name, SpanKind.SERVER, undefined))
    await withTimeout(tracing.forceFlush(), 3000, `the export of ${name}`)
  }
  return { tracing, errors, exportOne }
}

/** Timers alive now, by what they were made for: the agent's deadlines and BoundedExport's (tracing.ts), told apart by their callbacks. */
const liveTimers = () => {
  const live = new Map<number, { readonly _onTimeout?: unknown }>()
  const hook = createHook({
    init: (id, type, _trigger, resource) => {
      if (type === "Timeout") live.set(id, resource as { readonly _onTimeout?: unknown })
    },
    destroy: (id) => live.delete(id)
  }).enable()
  cleanup.add(() => hook.disable())
  const made = (marker: string): number => [...live.values()].filter((timer) => String(timer._onTimeout).includes(marker)).length
  return { deadlines: () => made("ExportDeadlineExceeded"), exportTimers: () => made("not answered within") }
}

describe("the OTLP export deadline against collectors that answer", () => {
  it("1,000 exports on one keep-alive socket each run to their own end: none cut by an earlier one's deadline, no timer left per export, the idle pooled socket kept", async () => {
    const { seen, url } = await collector()
    // A deadline shorter than the exports take in all: one left armed from an earlier export would cut a later one.
    // Long enough that a loaded machine's pause does not pass it (250 ms did, once in three runs).
    const deadlineMs = 1000
    const { tracing, errors, exportOne } = tracingTo(url, deadlineMs)
    const timers = liveTimers()
    const started = performance.now()
    // 1,000 exports at least, and for at least twice the deadline however fast they go.
    let exports = 0
    while (exports < 1000 || performance.now() - started < 2 * deadlineMs) await exportOne(`span ${exports++}`)
    console.log(`${exports} exports in ${(performance.now() - started).toFixed(0)} ms over ${seen.connections} connection(s)`)
    expect({ exports: seen.exports, connections: seen.connections, closed: seen.closed, dropped: tracing.droppedSpans, errors }).toStrictEqual({
      exports,
      connections: 1,
      closed: 0,
      dropped: { queueFull: 0, exportFailed: 0 },
      errors: []
    })
    // The request gives its socket back once its answer ended (keepSocketAlive): the deadline is disarmed there.
    await waitFor(() => timers.deadlines() === 0 && timers.exportTimers() === 0, 2000, "no export timer left alive")
    // Left idle in the pool for longer than the deadline (the idle time is what is tested), the socket is not cut, and the next export reuses it.
    await new Promise<void>((resolve) => setTimeout(resolve, 2 * deadlineMs))
    expect(seen.closed).toBe(0)
    await exportOne("after the idle time")
    expect({ exports: seen.exports, connections: seen.connections, closed: seen.closed, errors }).toStrictEqual({ exports: exports + 1, connections: 1, closed: 0, errors: [] })
  }, 60_000)

  it("over https to a collector whose certificate only OTEL_EXPORTER_OTLP_CERTIFICATE's CA vouches for: the export reaches it (and fails without that file)", async () => {
    const pki = await makeTestPki("otlp")
    const { seen, url } = await collector(await ipServerCertificate(pki, "127.0.0.1"))
    const dir = mkdtempSync(join(tmpdir(), "otlp-ca-"))
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }))
    writeFileSync(join(dir, "ca.pem"), pki.root.certificatePem)
    const before = process.env.OTEL_EXPORTER_OTLP_CERTIFICATE
    cleanup.add(() => {
      if (before === undefined) delete process.env.OTEL_EXPORTER_OTLP_CERTIFICATE
      else process.env.OTEL_EXPORTER_OTLP_CERTIFICATE = before
    })

    delete process.env.OTEL_EXPORTER_OTLP_CERTIFICATE
    const untrusting = tracingTo(url, 2000)
    await untrusting.exportOne("no CA")
    expect({ exports: seen.exports, dropped: untrusting.tracing.droppedSpans }).toStrictEqual({ exports: 0, dropped: { queueFull: 0, exportFailed: 1 } })

    // The exporter reads the OTLP TLS files from process.env (tracing.ts says so), when it is made.
    process.env.OTEL_EXPORTER_OTLP_CERTIFICATE = join(dir, "ca.pem")
    const trusting = tracingTo(url, 2000)
    await trusting.exportOne("with the CA")
    await trusting.exportOne("again, on the kept socket")
    expect({ exports: seen.exports, dropped: trusting.tracing.droppedSpans, errors: trusting.errors }).toStrictEqual({ exports: 2, dropped: { queueFull: 0, exportFailed: 0 }, errors: [] })
  }, 30_000)
})
