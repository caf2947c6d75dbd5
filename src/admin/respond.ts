// Small HTTP helpers of the admin server: JSON answers and bounded request bodies.
import type * as http from "node:http"

export const json = (res: http.ServerResponse, status: number, body: unknown): void => {
  const text = JSON.stringify(body, null, 2)
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
  res.end(text)
}

/**
 * Reads a request body of at most `limit` characters; undefined as soon as it is larger. The rest
 * of a large body is read and dropped (not the socket destroyed), so the caller still gets its 400.
 */
export const smallBody = (req: http.IncomingMessage, limit: number): Promise<string | undefined> =>
  new Promise((resolve, reject) => {
    let text: string | undefined = ""
    req.setEncoding("utf8")
    req.on("data", (chunk: string) => {
      if (text === undefined) return
      text += chunk
      if (text.length > limit) {
        text = undefined
        resolve(undefined)
      }
    })
    req.once("end", () => resolve(text))
    req.once("error", reject)
  })
