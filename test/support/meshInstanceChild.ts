// One instance of service "catalog" in a child process, for test/sidecar/balancing.solo.test.ts: an
// HTTP app and its sidecar in the same process, so a SIGKILL takes both down mid-request, as a
// crashed pod would. Usage: node meshInstanceChild.ts NAME [DELAY_MS]
//
// The app answers every request with 200 and the body NAME, after DELAY_MS (default 0: at once);
// a request to /hold is reported and never answered (the test kills the instance while it is
// held). The sidecar listens on 127.0.0.1 port 0 (inbound IIP; no outbound use, no admin).
// Reports on stdout, one JSON object per line: {"inbound":"127.0.0.1:P","pid":N} once both are up,
// {"held":"<method> <url>"} each time a /hold request reaches the app, {"error":"..."} (then exit 1)
// if it cannot start. Exits when its stdin closes, so it never outlives the test process.
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import * as http from "node:http"
import type * as net from "node:net"
import * as SidecarLive from "../../src/sidecar/sidecar.ts"
import { quietLog, sidecarConfig } from "./sidecarHarness.ts"

const say = (message: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(message)}\n`)

const name = process.argv[2] ?? "instance"
const delayMs = Number(process.argv[3] ?? "0")

process.stdin.resume()
process.stdin.once("close", () => process.exit(0))

const app = http.createServer((req, res) => {
  req.resume()
  req.once("end", () => {
    if ((req.url ?? "").startsWith("/hold")) {
      say({ held: `${req.method} ${req.url}` })
      return
    }
    const answer = () => {
      res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(name) })
      res.end(name)
    }
    if (delayMs > 0) setTimeout(answer, delayMs)
    else answer()
  })
})

try {
  await new Promise<void>((resolve, reject) => {
    app.once("error", reject)
    app.listen(0, "127.0.0.1", () => resolve())
  })
  const appPort = (app.address() as net.AddressInfo).port
  // A Scope that is never closed: the process ends by SIGKILL (or when stdin closes).
  const scope = await Effect.runPromise(Scope.make())
  const sidecar = await Effect.runPromise(
    SidecarLive.make(sidecarConfig({ service: "catalog", node: name, app: `127.0.0.1:${appPort}` }), quietLog).pipe(Scope.provide(scope))
  )
  say({ inbound: `127.0.0.1:${sidecar.inbound.port}`, pid: process.pid })
} catch (error) {
  say({ error: error instanceof Error ? error.message : String(error) })
  process.exit(1)
}
