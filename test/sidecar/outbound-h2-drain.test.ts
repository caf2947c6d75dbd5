// The drain of A's h2c listener (sidecar.ts: close(drainTimeoutMs), then destroyAll): each session
// gets GOAWAY NO_ERROR and takes no new stream; a call in flight finishes whole within the drain's
// deadline, after which the session closes; one still open at the deadline is cut (src/h2's close
// with the deadline the drain chose, not its own 5 s). Real peer: node's HTTP/2 client.
import * as http2 from "node:http2"
import { afterEach, expect, it } from "vitest"
import type { OutboundCall } from "../../src/sidecar/outboundCall.ts"
import { h2cWithClient } from "../helpers/h2cListener.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const start = async () => {
  const held: Array<OutboundCall> = []
  const closes: Array<boolean> = []
  const { h2, session } = await h2cWithClient(cleanup, (call) => {
    call.onClose((finished) => closes.push(finished))
    held.push(call)
  }, { idleTimeoutMs: 60_000, answerIdleMs: 60_000 })
  const goaway = new Promise<number>((resolve) => session.once("goaway", (code) => resolve(code)))
  const closed = new Promise<void>((resolve) => session.once("close", () => resolve()))
  const stream = session.request({ ":path": "/slow", ":authority": "catalog" })
  stream.on("error", () => {})
  let body = ""
  stream.on("data", (chunk: Buffer) => (body += chunk.toString()))
  const ended = new Promise<string>((resolve) => {
    stream.once("end", () => resolve(`end ${stream.rstCode ?? 0}`))
    stream.once("close", () => resolve(`close ${stream.rstCode}`))
  })
  await waitFor(() => held.length === 1, 5000, "the call at A")
  return { h2, held, closes, goaway, closed, ended, body: () => body }
}

it("a call in flight at the drain finishes whole after the GOAWAY, then the session closes", async () => {
  const { h2, held, closes, goaway, closed, ended, body } = await start()
  h2.close(60_000)
  expect(await withTimeout(goaway, 5000, "the GOAWAY")).toBe(http2.constants.NGHTTP2_NO_ERROR)
  held[0]!.writeHead(200, [])
  held[0]!.end(Buffer.from("whole"))
  expect(await withTimeout(ended, 5000, "the answer's end")).toBe("end 0")
  expect(body()).toBe("whole")
  await withTimeout(closed, 5000, "the session's close")
  expect(closes).toStrictEqual([true])
  await waitFor(() => h2.sessions.size === 0, 5000, "A's side of the session to go")
})

it("a call still open at the drain's deadline is cut then, not at src/h2's own 5 s", async () => {
  const { h2, closes, goaway, closed, ended } = await start()
  const asked = performance.now()
  h2.close(100)
  expect(await withTimeout(goaway, 5000, "the GOAWAY")).toBe(http2.constants.NGHTTP2_NO_ERROR)
  await withTimeout(closed, 4000, "the session's close")
  expect(await ended).not.toBe("end 0")
  expect(performance.now() - asked).toBeLessThan(4000)
  expect(closes).toStrictEqual([false])
})
