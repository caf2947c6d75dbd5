// The admin server's total handler (src/admin/respond.ts) on a real node:http server: a route that
// throws, rejects, or fails after its answer began never lets the exception out of the "request"
// event; the client gets a 4xx for its own error, a 500 for ours (logged, sanitized), or a closed
// connection when part of the answer already went out; the server keeps answering.
import * as http from "node:http"
import type * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { AdminRequestInvalid, json, totalHandler } from "../../src/admin/respond.ts"
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
})
