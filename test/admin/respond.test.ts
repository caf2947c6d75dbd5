// The admin server's total handler (src/admin/respond.ts) on a real node:http server: a route that
// throws, rejects, or fails after its answer began never lets the exception out of the "request"
// event; the client gets a 4xx for its own error, a 500 for ours (logged, sanitized), or a closed
// connection when part of the answer already went out; the server keeps answering.
import * as http from "node:http"
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { AdminRequestInvalid, json, smallBody, totalHandler } from "../../src/admin/respond.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { call } from "../support/sidecarHarness.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const serve = async (route: (req: http.IncomingMessage, res: http.ServerResponse) => Promise<void>) => {
  const logged: Array<{ event: string; fields: Record<string, unknown> }> = []
  const server = http.createServer(totalHandler(route, (event, fields) => logged.push({ event, fields: fields as Record<string, unknown> })))
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => {
    server.close(() => resolve())
    server.closeAllConnections()
  }))
  return { port: (server.address() as net.AddressInfo).port, logged }
}

describe("totalHandler", () => {
  it("an AdminRequestInvalid is the client's error, answered with its status and no log", async () => {
    const { port, logged } = await serve(async () => {
      throw new AdminRequestInvalid({ status: 400, error: "bad_path", message: "no" })
    })
    const answer = await call(port, { path: "/x" })
    expect(answer.status).toBe(400)
    expect(JSON.parse(answer.body.toString())).toStrictEqual({ error: "bad_path", message: "no" })
    expect(logged).toStrictEqual([])
  })

  it("anything else thrown, synchronously or later, is a 500 and one sanitized log event; the server keeps answering", async () => {
    const { port, logged } = await serve(async (req, res) => {
      if (req.url === "/ok") return json(res, 200, { ok: true })
      if (req.url === "/later") await Promise.resolve()
      throw new Error(`broken\u001b[2J\r\nforged line ${"x".repeat(500)}`)
    })
    for (const path of ["/now", "/later"]) {
      const answer = await call(port, { path })
      expect(answer.status).toBe(500)
      expect(JSON.parse(answer.body.toString())).toMatchObject({ error: "internal" })
    }
    expect((await call(port, { path: "/ok" })).status).toBe(200)
    expect(logged.map((l) => l.event)).toStrictEqual(["admin-request-failed", "admin-request-failed"])
    const message = String(logged[0]!.fields.message)
    expect(message).not.toMatch(/[\u0000-\u001f]/)
    expect(message).toContain("\\u001b[2J\\r\\nforged line")
    expect(message.length).toBeLessThan(260)
  })

  it("a failure after the answer began closes the connection instead of writing a second answer", async () => {
    const { port, logged } = await serve(async (_req, res) => {
      res.writeHead(200, { "content-type": "text/plain" })
      res.write("partial")
      await Promise.resolve()
      throw new Error("late")
    })
    await expect(call(port, { path: "/" })).rejects.toThrow()
    expect(logged).toHaveLength(1)
  })

  it("a body the client cuts off is the client's doing: no log event (a client could otherwise write our failure log at will)", async () => {
    let begun!: () => void
    const started = new Promise<void>((resolve) => (begun = resolve))
    let settled!: () => void
    const done = new Promise<void>((resolve) => (settled = resolve))
    const { port, logged } = await serve(async (req, res) => {
      begun()
      try {
        json(res, 200, { body: await smallBody(req, 1024) })
      } finally {
        settled()
      }
    })
    const socket = net.connect(port, "127.0.0.1")
    socket.on("error", () => {})
    socket.write("PUT /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"wei")
    // The server has the head (the route runs) before the client goes.
    await started
    socket.destroy()
    await done
    // totalHandler's catch runs on the route's rejection, before the next turn of the loop.
    await new Promise<void>((resolve) => setImmediate(resolve))
    expect(logged).toStrictEqual([])
    expect((await call(port, { method: "PUT", path: "/x", body: "3" })).status).toBe(200)
  })
})
