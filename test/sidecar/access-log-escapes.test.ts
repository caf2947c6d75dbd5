// What an app's request puts in the access log (--access-log: one JSON line per request on stdout,
// sidecar.ts): JSON.stringify escapes U+0000-U+001F, not DEL or the C1 controls U+0080-U+009F,
// and an HTTP/2 :path may carry those (nghttp2 takes bytes 0x80-0xFF in it; node reads them as
// Latin-1). U+009B is CSI: a terminal or log viewer showing the line would run the escape
// sequence after it. The line must carry them escaped (\u009b), and still read back as the URI.
// Real sidecars on 127.0.0.1:0 (startMesh), a real app, node's HTTP/2 client on the outbound port.
import * as http2 from "node:http2"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { AccessRecord } from "../../src/sidecar/outboundAccess.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { captureAccessLog, echoRequest, LOOPBACK, startMesh } from "../support/sidecarHarness.ts"

describe("the access log against control characters in a request", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("an HTTP/2 :path with C1 controls (CSI U+009B) is logged escaped, and reads back as sent", async () => {
    const lines = captureAccessLog(cleanup, (line) => line)
    const { a } = await startMesh(cleanup, echoRequest, { a: { accessLog: true } })
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    cleanup.add(() => session.destroy())
    const path = "/x\u009b31m\u0085\u009d0;title"
    const status = await new Promise<number>((resolve, reject) => {
      const stream = session.request({ ":path": path, ":authority": "catalog" })
      stream.on("response", (head) => resolve(Number(head[":status"])))
      stream.on("error", reject)
      stream.resume()
      stream.end()
    })
    // Answered (the app leg cannot carry that path: 502); either way the request has its access line.
    expect(status).toBeGreaterThanOrEqual(200)
    const line = lines.find((l) => l.includes('"uri"'))
    expect(line).toBeDefined()
    expect(line!.match(/[\u007f-\u009f]/g) ?? []).toStrictEqual([])
    expect((JSON.parse(line!) as AccessRecord).uri).toBe(path)
  })
})
