// A child-process IIP server for tests that kill the server (test/iip/client-server.test.ts, test/iip/client-own-stall.test.ts).
// It listens on 127.0.0.1 port 0 and reports on stdout, one JSON object per line:
// {"port":N} once listening, and {"hang":"<data>"} each time a /hang request reaches its handler.
// /hang never answers; /echo answers with the request data; /slow answers with it after 200 ms.
import { IipServer } from "../../src/iip/server.ts"

const server = new IipServer({ port: 0, log: () => {} })
server.handle("/echo", (request) => request.data)
server.handle("/slow", (request) => new Promise<Buffer>((answer) => setTimeout(answer, 200, request.data)))
server.handle("/hang", (request) => {
  process.stdout.write(`${JSON.stringify({ hang: request.data.toString("utf8") })}\n`)
  return new Promise<string>(() => {})
})
await server.listen()
process.stdout.write(`${JSON.stringify({ port: server.address.port })}\n`)
