// A node:http server on 127.0.0.1 port 0 for the sidecar bench's load generators (wrk's script, the
// C open loop): it takes each whole request, counts requests and connections, notes the first three
// that are not the bench's own (POST /echo, content-type application/octet-stream, the 1 KiB payload
// byte for byte, and whatever `alsoWanted` asks of the headers), and answers with `answer`.
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { makePayload, PATH } from "../../bench/sidecar/request.ts"

export type Answer = (body: Buffer, req: http.IncomingMessage, res: http.ServerResponse) => void

/** Sends the request's body back, as the bench's app does. */
export const echo: Answer = (body, _req, res) => {
  res.writeHead(200, { "content-length": body.length })
  res.end(body)
}

export const benchRequestServer = async (
  cleanups: Array<() => void | Promise<void>>,
  answer: Answer = echo,
  alsoWanted: (req: http.IncomingMessage) => boolean = () => true
) => {
  const payload = makePayload()
  const seen = { requests: 0, connections: 0, wrong: [] as Array<string> }
  const server = http.createServer((req, res) => {
    const parts: Array<Buffer> = []
    req.on("data", (chunk: Buffer) => parts.push(chunk))
    req.on("end", () => {
      seen.requests++
      const body = Buffer.concat(parts)
      if (req.method !== "POST" || req.url !== PATH || req.headers["content-type"] !== "application/octet-stream" || !body.equals(payload) || !alsoWanted(req)) {
        if (seen.wrong.length < 3) seen.wrong.push(`${req.method} ${req.url} host ${req.headers.host} ${req.headers["content-type"]} ${body.length} B`)
      }
      answer(body, req, res)
    })
  })
  server.on("connection", () => seen.connections++)
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
  cleanups.push(() => server.closeAllConnections())
  return { seen, port: (server.address() as AddressInfo).port, server }
}
