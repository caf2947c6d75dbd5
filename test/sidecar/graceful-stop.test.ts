// Graceful stop of a sidecar: closing its Scope (what SIGTERM does under the CLI) first turns it
// not ready (sidecar.ready() and the admin's /ready), then drains: a slow request already in
// flight through A -> B finishes with 200 within the drain timeout, and the Scope finishes closing
// once it has (not at the drain deadline). The CLI `iip-mesh sidecar` does the same and exits 0
// on SIGTERM, also on --app-protocol h2c after a gRPC call (the h2c leg's deadline timer, armed
// for the call's deadline, kept the process alive until then).
import * as grpc from "@grpc/grpc-js"
import { Effect, Exit, Scope } from "effect"
import type { ChildProcess } from "node:child_process"
import type * as http from "node:http"
import { afterEach, describe, expect, it } from "vitest"
import * as Admin from "../../src/admin/adminServer.ts"
import * as SidecarLive from "../../src/sidecar/sidecar.ts"
import { holdsStarts } from "../support/childStart.ts"
import { identity, rawMethod } from "../support/grpcRaw.ts"
import { Cleanup, deferred, withTimeout } from "../support/iipRaw.ts"
import { call, quietLog, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"
import { killIfRunning, portOf, spawnSidecarProcess } from "../support/sidecarProcess.ts"

const ECHO = rawMethod("demo.Inventory", "Echo", false, false)
const EchoClient = grpc.makeGenericClientConstructor({ echo: ECHO }, "Inventory")

/** GETs the admin's /ready until it answers `status`, at most `timeoutMs` (readiness announces itself with no event). */
const waitForReady = async (adminPort: number, status: number, timeoutMs: number): Promise<number> => {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    const answer = await call(adminPort, { path: "/ready", headers: { host: "admin" }, timeoutMs: 1000 }).catch(() => undefined)
    if (answer?.status === status) return performance.now()
    if (performance.now() > deadline) throw new Error(`admin /ready did not answer ${status} within ${timeoutMs} ms (last: ${answer?.status})`)
    await new Promise<void>((r) => setTimeout(r, 5))
  }
}

/** An app whose requests wait until the test releases them. */
const slowApp = () => {
  const got = deferred()
  const release = deferred()
  const state = { finishedAt: 0 }
  const handler: http.RequestListener = (req, res) => {
    req.resume()
    got.resolve()
    res.once("finish", () => (state.finishedAt = performance.now()))
    release.promise.then(() => res.end("finished slowly"))
  }
  return { got, release, handler, state }
}

describe("graceful stop", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  it("closing B's Scope turns B not ready first (ready() and admin /ready), then lets the in-flight request finish with 200", async () => {
    const slow = slowApp()
    const app = await startApp(cleanup, slow.handler)
    // B with its admin server in one Scope, as the CLI runs them (admin first, so it answers during the drain).
    const scope = await Effect.runPromise(Scope.make())
    let closing: Promise<void> | undefined
    const stopB = () => (closing ??= Effect.runPromise(Scope.close(scope, Exit.void)))
    cleanup.add(stopB)
    let b: SidecarLive.Sidecar | undefined
    const bConfig = sidecarConfig({ service: "catalog", app: app.address, drainTimeoutMs: 5000 })
    const admin = (await Effect.runPromise(Admin.make({ admin: bConfig.admin, control: bConfig.adminControl, token: undefined }, () => b).pipe(Scope.provide(scope)))).readOnly
    b = await Effect.runPromise(SidecarLive.make(bConfig, quietLog).pipe(Scope.provide(scope)))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: `127.0.0.1:${b.inbound.port}`, weight: 1 }] } }))

    expect(b.ready()).toBe(true)
    expect((await call(admin.port, { path: "/ready" })).status).toBe(200)

    let answeredAt = 0
    const inFlight = call(a.outboundPort, { path: "/slow", timeoutMs: 10_000 }).then((answer) => {
      answeredAt = performance.now()
      return answer
    })
    await withTimeout(slow.got.promise, 5000, "the app to receive the slow request")

    const stopStarted = performance.now()
    let closedAt = 0
    const closed = stopB().then(() => (closedAt = performance.now()))
    const readyFalseAt = await waitForReady(admin.port, 503, 2000)
    expect(b.ready()).toBe(false)
    const readyBody = await call(admin.port, { path: "/ready" })
    expect(JSON.parse(readyBody.body.toString())).toStrictEqual({ ready: false })
    // Still draining: the request is in flight, the Scope not closed.
    expect(answeredAt).toBe(0)
    expect(closedAt).toBe(0)

    slow.release.resolve()
    const answer = await inFlight
    expect(answer.status).toBe(200)
    expect(answer.body.toString()).toBe("finished slowly")
    await withTimeout(closed, 5000, "B's Scope to finish closing")
    expect(readyFalseAt).toBeLessThan(answeredAt)
    // The Scope stayed open until the app had answered (B then relays it; A may deliver it a moment after B closed).
    expect(slow.state.finishedAt).toBeGreaterThan(0)
    expect(slow.state.finishedAt).toBeLessThanOrEqual(closedAt)
    // It closed once idle, not at the 5 s drain deadline.
    expect(closedAt - stopStarted).toBeLessThan(4000)
  })

  it("a stop with nothing in flight finishes at once, far below the drain timeout", async () => {
    const app = await startApp(cleanup, (_req, res) => res.end("ok"))
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, drainTimeoutMs: 5000 }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    expect((await call(a.outboundPort, { path: "/" })).status).toBe(200)
    const started = performance.now()
    await withTimeout(b.stop(), 5000, "B to stop")
    expect(b.sidecar.ready()).toBe(false)
    expect(performance.now() - started).toBeLessThan(1000)
  })

  describe("the CLI", () => {
    let child: ChildProcess | undefined
    afterEach(() => {
      killIfRunning(child)
      child = undefined
    })

    const startCli = (args: ReadonlyArray<string>) => {
      const cli = spawnSidecarProcess(args)
      child = cli.proc
      return cli
    }

    it("`iip-mesh sidecar` exits 0 on SIGTERM", async () => {
      const cli = startCli(["--service", "catalog", "--outbound", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
      const line = await cli.ready
      expect(line.event).toBe("sidecar-ready")
      expect(portOf(line.outbound)).toBeGreaterThan(0)
      expect((await call(portOf(line.admin), { path: "/ready" })).status).toBe(200)
      cli.proc.kill("SIGTERM")
      const exit = await withTimeout(cli.exited, 10_000, "the sidecar to exit after SIGTERM")
      expect(exit, cli.stderr()).toStrictEqual({ code: 0, signal: null })
    }, holdsStarts(1, 30_000))

    it("a CLI sidecar on --app-protocol h2c that served a gRPC call exits 0 on SIGTERM within its drain timeout, not at the call's deadline", async () => {
      const server = new grpc.Server()
      server.addService({ echo: ECHO }, { echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request) })
      const appPort = await new Promise<number>((resolve, reject) =>
        server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) => (error === null ? resolve(port) : reject(error)))
      )
      cleanup.add(() => server.forceShutdown())
      const cli = startCli([
        "--service", "inventory",
        "--app", `127.0.0.1:${appPort}`,
        "--app-protocol", "h2c",
        "--outbound", "127.0.0.1:0",
        "--inbound", "127.0.0.1:0",
        "--admin", "127.0.0.1:0",
        "--drain-timeout", "1s"
      ])
      const line = await cli.ready
      // The call's deadline at B: A's request timeout, 30 s.
      const a = await startSidecar(cleanup, sidecarConfig({ service: "store", requestTimeoutMs: 30_000, endpoints: { inventory: [{ address: line.inbound, weight: 1 }] } }))
      const client = new EchoClient(`127.0.0.1:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "inventory" })
      cleanup.add(() => client.close())
      const answer = new Promise<Buffer | undefined>((resolve, reject) =>
        client.makeUnaryRequest(ECHO.path, identity, identity, Buffer.from("stock?"), (error, value) => (error === null ? resolve(value) : reject(error)))
      )
      expect((await withTimeout(answer, 10_000, "the gRPC answer"))?.toString()).toBe("stock?")
      const stoppedAt = performance.now()
      cli.proc.kill("SIGTERM")
      const exit = await withTimeout(cli.exited, 10_000, "the sidecar to exit after SIGTERM")
      expect(exit, cli.stderr()).toStrictEqual({ code: 0, signal: null })
      expect(performance.now() - stoppedAt).toBeLessThan(3000)
    }, holdsStarts(1, 30_000))

    it("on SIGTERM the CLI sidecar turns not ready, finishes the in-flight request with 200, then exits 0", async () => {
      const slow = slowApp()
      const app = await startApp(cleanup, slow.handler)
      const cli = startCli([
        "--service", "catalog",
        "--app", app.address,
        "--outbound", "127.0.0.1:0",
        "--inbound", "127.0.0.1:0",
        "--admin", "127.0.0.1:0",
        "--drain-timeout", "5s"
      ])
      const line = await cli.ready
      const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: line.inbound, weight: 1 }] } }))
      let answeredAt = 0
      const inFlight = call(a.outboundPort, { path: "/slow", timeoutMs: 10_000 }).then((answer) => {
        answeredAt = performance.now()
        return answer
      })
      await withTimeout(slow.got.promise, 5000, "the app to receive the slow request")
      cli.proc.kill("SIGTERM")
      const readyFalseAt = await waitForReady(portOf(line.admin), 503, 3000)
      expect(answeredAt).toBe(0)
      expect(cli.proc.exitCode).toBeNull()
      slow.release.resolve()
      const answer = await inFlight
      expect(answer.status).toBe(200)
      expect(answer.body.toString()).toBe("finished slowly")
      expect(readyFalseAt).toBeLessThan(answeredAt)
      const exit = await withTimeout(cli.exited, 10_000, "the sidecar to exit after the drain")
      expect(exit, cli.stderr()).toStrictEqual({ code: 0, signal: null })
    }, holdsStarts(1, 30_000))
  })
})
