// The app at the end of every path of the sidecar bench: an HTTP/1.1 keep-alive echo server, run
// in its own process (spawnServer starts this file; it prints its port and exits with its stdin).
import * as http from "node:http"
import { fileURLToPath } from "node:url"
import { listenOn, serveChild } from "../children.ts"
import { HOST } from "./request.ts"

export const APP_FILE = import.meta.url

const startApp = (): Promise<number> => {
  const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    const parts: Array<Buffer> = []
    let bytes = 0
    req.on("data", (chunk: Buffer) => {
      parts.push(chunk)
      bytes += chunk.length
    })
    req.on("end", () => {
      const body = parts.length === 1 ? parts[0]! : Buffer.concat(parts, bytes)
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": body.length })
      res.end(body)
    })
  })
  return listenOn(server, HOST)
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  serveChild(startApp).catch((error: unknown) => {
    process.stderr.write(`sidecar bench app failed: ${error instanceof Error ? error.message : String(error)}\n`)
    process.exit(1)
  })
}
