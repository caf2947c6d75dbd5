// The flood of h2c uploads the solo flood tests send A's outbound listener (h2c-body-flood-rss,
// h2c-body-flood-turns): `connections` node:http2 sessions, each with `uploads` POSTs of `body` at
// once, to an app that never reads them; over once the callers' sockets wrote nothing for `quietMs`.
import * as http2 from "node:http2"
import { type Cleanup, waitFor } from "./iipRaw.ts"
import { LOOPBACK } from "./sidecarHarness.ts"

/** Floods `port` and resolves with the bytes the callers' sockets wrote, once they wrote nothing for `quietMs` (A takes no more). */
export const floodUploads = async (cleanup: Cleanup, port: number, connections: number, uploads: number, body: Buffer, quietMs: number): Promise<number> => {
  const sessions = Array.from({ length: connections }, () => {
    const session = http2.connect(`http://${LOOPBACK}:${port}`)
    session.on("error", () => {})
    cleanup.add(() => session.destroy())
    for (let i = 0; i < uploads; i++) {
      const stream = session.request({ ":method": "POST", ":path": "/upload", ":authority": "store", "content-type": "application/octet-stream" })
      stream.on("error", () => {})
      stream.end(body)
    }
    return session
  })
  const written = () => sessions.reduce((sum, session) => sum + (session.socket?.bytesWritten ?? 0), 0)
  let last = -1
  let stillSince = performance.now()
  await waitFor(
    () => {
      const now = written()
      if (now !== last) {
        last = now
        stillSince = performance.now()
      }
      return performance.now() - stillSince > quietMs
    },
    120_000,
    "the callers' writes to stop"
  )
  return last
}
