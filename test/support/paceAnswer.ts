// An app's large answer written as its socket takes it (write until the buffer is full, then wait for
// 'drain'): for tests of what the sidecars hold when the caller at the far end reads slowly or not at all.
import type * as http from "node:http"

/** A 200 of `bytes` octets (a whole number of `chunk`s), paced by the socket's drain. */
export const paceAnswer = (res: http.ServerResponse, bytes: number, chunk: Buffer): void => {
  res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(bytes) })
  let sent = 0
  const pump = () => {
    while (sent < bytes && !res.destroyed) {
      sent += chunk.length
      if (!res.write(chunk)) return void res.once("drain", pump)
    }
    res.end()
  }
  pump()
}
