// A node:http app for the tests of A's h2c request-body windows (h2c-body-credit,
// h2c-body-connection-window): /upload reads its body and answers its length; any other request's
// body is never read and its answer parked, until `release` (or the test's cleanup) ends it.
import type * as http from "node:http"
import type { Cleanup } from "./iipRaw.ts"
import { startApp } from "./sidecarHarness.ts"

export const startBodyApp = async (cleanup: Cleanup) => {
  const parked: Array<http.ServerResponse> = []
  const app = await startApp(cleanup, (req, res) => {
    if (req.url !== "/upload") return void parked.push(res)
    let bytes = 0
    req.on("data", (chunk: Buffer) => (bytes += chunk.length))
    req.on("end", () => res.end(String(bytes)))
  })
  cleanup.add(() => parked.splice(0).forEach((res) => res.destroy()))
  return { app, parked, release: (count = Infinity) => parked.splice(0, count).forEach((res) => res.end("late")) }
}
