// A caller on the outbound listener (http1Connection.ts) that sends bytes llhttp refuses after
// requests it is still owed answers for. Before, the 400 went out at once in the place of the
// first unanswered request's answer and the connection closed: a request already on its way to
// the far app (it may have run there) read as refused, and one read in the same read as the
// garbage was never sent. Now the requests before the garbage are answered in order, then the
// 400 (with `connection: close`) answers the garbage in its own place, then the close; it is
// counted (iip_mesh_http1_stray_bytes_total, outbound). Both tests failed before the fix. So does
// a request read behind others whose chunked body llhttp refuses: it leaves the queue unsent, and
// the 400 answers it in its turn (failed on 617baf5: the 400 went out in the first one's place).
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, readUntil, waitFor, withTimeout } from "../support/iipRaw.ts"
import { parsePrometheusText, value } from "../support/prometheusText.ts"
import { HttpStreamParser } from "../support/rawHttp.ts"
import { type Mesh, startMesh } from "../support/sidecarHarness.ts"

const GARBAGE = "\x01\x02 not http\r\n\r\n"

describe("bytes a caller sends after its requests that are no request", () => {
  let cleanup: Cleanup
  let mesh: Mesh
  /** Answers to /held wait until released. */
  let release: () => void = () => {}
  let held: Promise<void>
  beforeEach(async () => {
    cleanup = new Cleanup()
    held = new Promise<void>((resolve) => (release = resolve))
    mesh = await startMesh(cleanup, (req, res) => {
      const answer = () => {
        res.writeHead(200, { "content-type": "text/plain", "content-length": String(req.url!.length) })
        res.end(req.url)
      }
      if (req.url === "/held") void held.then(answer)
      else answer()
    }, { a: { tracing: false }, b: { tracing: false } })
  })
  afterEach(() => {
    release()
    return cleanup.run()
  })

  /** A raw caller: every answer it reads, and whether A closed the connection. */
  const rawCaller = () => {
    const socket = net.connect(mesh.a.outboundPort, "127.0.0.1")
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    const parser = new HttpStreamParser("response")
    const seen = { answers: [] as Array<string>, closed: false }
    socket.on("data", (chunk: Buffer) => {
      for (const message of parser.push(chunk)) seen.answers.push(`${message.startLine} ${message.body.toString("latin1")}`)
    })
    socket.on("close", () => (seen.closed = true))
    return { socket, seen }
  }

  const strayCount = async () => value(parsePrometheusText((await mesh.a.sidecar.telemetry.metrics.text()).body), "iip_mesh_http1_stray_bytes_total", { direction: "outbound" })

  it("garbage in the same write as two requests: both are answered in order, then the 400, then the close", async () => {
    const { socket, seen } = rawCaller()
    socket.write(`GET /one HTTP/1.1\r\nhost: catalog\r\n\r\nGET /two HTTP/1.1\r\nhost: catalog\r\n\r\n${GARBAGE}`, "latin1")
    await withTimeout(waitFor(() => seen.closed, 5000, "A to close the connection"), 6000, "the close")
    expect(seen.answers).toStrictEqual(["HTTP/1.1 200 OK /one", "HTTP/1.1 200 OK /two", "HTTP/1.1 400 Bad Request "])
    expect(await strayCount()).toBe(1)
  })

  it("garbage while a request is at the far app: its answer still comes, then the 400, then the close", async () => {
    const { socket, seen } = rawCaller()
    socket.write("GET /held HTTP/1.1\r\nhost: catalog\r\n\r\n", "latin1")
    await waitFor(() => mesh.app.seen.some((r) => r.url === "/held"), 5000, "the app to hold /held")
    socket.write(GARBAGE, "latin1")
    // A read the garbage: nothing goes out before the held answer (the wait is for A's metric, not a sleep).
    expect((await readUntil(strayCount, (count) => count === 1, 5000)).value).toBe(1)
    expect(seen.answers).toStrictEqual([])
    expect(seen.closed).toBe(false)
    release()
    await withTimeout(waitFor(() => seen.closed, 5000, "A to close the connection"), 6000, "the close")
    expect(seen.answers).toStrictEqual(["HTTP/1.1 200 OK /held", "HTTP/1.1 400 Bad Request "])
  })

  it("a request read behind one at the far app whose chunked body llhttp refuses: the first's answer still comes, then the 400, then the close", async () => {
    const { socket, seen } = rawCaller()
    socket.write("GET /held HTTP/1.1\r\nhost: catalog\r\n\r\n", "latin1")
    await waitFor(() => mesh.app.seen.some((r) => r.url === "/held"), 5000, "the app to hold /held")
    // Its head is read (it waits its turn), then its body's first chunk size is no hex number.
    socket.write("POST /two HTTP/1.1\r\nhost: catalog\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "latin1")
    expect((await readUntil(strayCount, (count) => count === 1, 5000)).value).toBe(1)
    release()
    await withTimeout(waitFor(() => seen.closed, 5000, "A to close the connection"), 6000, "the close")
    expect(seen.answers).toStrictEqual(["HTTP/1.1 200 OK /held", "HTTP/1.1 400 Bad Request "])
    // The refused request never went on.
    expect(mesh.app.seen.map((r) => r.url)).toStrictEqual(["/held"])
  })
})
