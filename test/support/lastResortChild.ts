// A child process for test/cli/lastResort.test.ts: installs the long-running commands' last line of
// defence (src/cli/lastResort.ts), then lets `FAULTS` exceptions escape from timers and leaves two
// promise rejections unhandled (messages with CR/LF, an escape sequence and a forged JSON line in
// them), and only then starts an HTTP server on 127.0.0.1:0 that serves the process metrics at
// /metrics, printing `{"port":N}` on stdout: it answering at all shows the process kept serving.
import * as http from "node:http"
import type * as net from "node:net"
import { installLastResort } from "../../src/cli/lastResort.ts"
import { makeMetrics } from "../../src/telemetry/metrics.ts"

const faults = Number(process.env.FAULTS ?? "3")
installLastResort({ command: "test-child" })

void Promise.reject(new Error("rejected once"))
void Promise.reject("a bare string\n{\"event\":\"forged\"}")
for (let i = 0; i < faults; i++) {
  setTimeout(() => {
    throw new Error(`thrown ${i}\r\n{"event":"forged"}\u001b[31m red`)
  }, 0)
}
// Timers with the same delay run in the order they were set: this one after every throw.
setTimeout(() => {
  const metrics = makeMetrics()
  const server = http.createServer((_req, res) => {
    metrics.text().then(({ body }) => res.end(body))
  })
  server.listen(0, "127.0.0.1", () => process.stdout.write(`${JSON.stringify({ port: (server.address() as net.AddressInfo).port })}\n`))
}, 0)
