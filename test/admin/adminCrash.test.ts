// A bad admin request against a real `iip-mesh sidecar` process (issue 13, point 1): a malformed
// percent-escape in an admin path (`GET /mesh/x/%ZZ/weight`) used to throw URIError out of the
// admin's request handler and end the process. Now it is a 400 in the admin's JSON error shape and
// the process keeps serving (/health, /ready and a good weight override still answer afterwards).
import type { ChildProcess } from "node:child_process"
import { afterEach, describe, expect, it } from "vitest"
import { holdsStarts } from "../support/childStart.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { call } from "../support/sidecarHarness.ts"
import { killIfRunning, portOf, spawnSidecarProcess } from "../support/sidecarProcess.ts"

describe("the admin server of a sidecar process", () => {
  let cleanup = new Cleanup()
  let child: ChildProcess | undefined
  afterEach(async () => {
    killIfRunning(child)
    child = undefined
    await cleanup.run()
    cleanup = new Cleanup()
  })

  const startSidecarProcess = async (args: ReadonlyArray<string>) => {
    const sidecar = spawnSidecarProcess(args)
    child = sidecar.proc
    return { ...sidecar, line: await sidecar.ready }
  }

  it("GET /mesh/x/%ZZ/weight is a 400 and the process keeps serving", async () => {
    const sidecar = await startSidecarProcess([
      "--service", "store",
      "--endpoint", "catalog=127.0.0.1:1",
      "--outbound", "127.0.0.1:0",
      "--inbound", "127.0.0.1:0",
      "--admin", "127.0.0.1:0"
    ])
    const admin = portOf(sidecar.line.adminControl)
    let exit: unknown = undefined
    void sidecar.exited.then((value) => (exit = value))

    for (const path of ["/mesh/x/%ZZ/weight", "/mesh/catalog/%E0%A4%A/weight", "/mesh/catalog/%/weight"]) {
      for (const method of ["GET", "PUT", "DELETE"]) {
        const answer = await call(admin, { method, path, headers: { host: "127.0.0.1" }, ...(method === "PUT" ? { body: "3" } : {}), timeoutMs: 5000 })
        expect(answer.status, `${method} ${path}`).toBe(400)
        expect(answer.headers["content-type"], `${method} ${path}: ${answer.body}`).toBe("application/json")
        expect(JSON.parse(answer.body.toString())).toMatchObject({ error: "bad_path" })
      }
    }

    expect((await call(admin, { path: "/health", headers: { host: "127.0.0.1" } })).status).toBe(200)
    expect((await call(admin, { path: "/ready", headers: { host: "127.0.0.1" } })).status).toBe(200)
    const put = await call(admin, { method: "PUT", path: "/mesh/catalog/127.0.0.1%3A1/weight", headers: { host: "127.0.0.1" }, body: "7" })
    expect(JSON.parse(put.body.toString())).toStrictEqual({ service: "catalog", address: "127.0.0.1:1", weight: 7 })
    expect(exit, sidecar.stderr()).toBeUndefined()
    expect(sidecar.proc.exitCode).toBeNull()
    // Bad input is the client's fault: nothing to report on stderr past the start-up's own lines
    // (without credentials, the sidecar says mutual TLS is off; and whether its memory trim is active).
    const lines = sidecar.stderr().split("\n").filter((line) => line !== "")
    expect(lines.filter((line) => !["mtls-off", "memory-trim"].includes((JSON.parse(line) as { event: string }).event))).toStrictEqual([])
  }, holdsStarts(1, 20_000))
})
