// The numeric options of IipServer, IipClient and the load-balance client (src/iip/optionLimits.ts):
// NaN, Infinity, negatives, fractions and numbers past a Node timer switched their bounds off (every
// check is `x > limit`, false for NaN) or made timers fire at once. Each is refused at construction
// with OptionInvalid naming the option and the value; the Effect constructor dies with it; the
// defaults and the documented edge values (0 timeouts, maxPending Infinity) still construct and serve.
// Real TCP on 127.0.0.1, port 0.
import * as Cause from "effect/Cause"
import type * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as http from "node:http"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { IipClient as EffectClient } from "../../src/effect/client.ts"
import { IipServer as EffectServer } from "../../src/effect/server.ts"
import { IipClient, make as makeClient } from "../../src/iip/client.ts"
import type { ClientOptions } from "../../src/iip/clientOptions.ts"
import { checkOptions, count, durationMs, maxTimerMs } from "../../src/iip/optionLimits.ts"
import { IipServer, make, type ServerOptions } from "../../src/iip/server.ts"
import { HttpAdapter } from "../../src/toolkit/httpAdapter.ts"
import { LoadBalanceClient, make as makeLoadBalancer } from "../../src/toolkit/loadBalanceClient.ts"
import { monotonicMs } from "../../src/mux/clock.ts"
import { PacketEncodeError } from "../../src/protocol/errors.ts"
import { MaxDeadlineMs } from "../../src/protocol/mesh.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { settle, startClient, startServer } from "../support/meshTest.ts"
import { defectOf, refusal } from "../support/optionRefusal.ts"

const notCounts: ReadonlyArray<unknown> = [NaN, Infinity, -Infinity, -1, 1.5, "8"]
const notDurations: ReadonlyArray<unknown> = [NaN, Infinity, -1, maxTimerMs + 1, "100"]

const serverCounts = [
  "maxConnections",
  "maxChannelsPerConnection",
  "maxQueuedRequestsPerConnection",
  "maxQueuedBytesPerConnection",
  "maxQueuedRequests",
  "maxQueuedBytes",
  "maxChannels",
  "maxQueuedWriteBytes",
  "maxMetaBytes"
] as const
const serverDurations = ["writeTimeoutMs", "firstPacketTimeoutMs", "packetTimeoutMs", "idleTimeoutMs", "drainTimeoutMs"] as const

describe("option limits", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("checkOptions names the owner, the option and the value, and passes undefined and in-range values", () => {
    const limits = { size: count(1, 10), waitMs: durationMs(0) }
    expect(() => checkOptions("Thing", limits, { size: 10, waitMs: 0.5 })).not.toThrow()
    expect(() => checkOptions("Thing", limits, {})).not.toThrow()
    const error = refusal(() => checkOptions("Thing", limits, { size: NaN }))
    expect(error._tag).toBe("OptionInvalid")
    expect(error.option).toBe("Thing size")
    expect(error.value).toBeNaN()
    expect(error.message).toBe("Thing size must be a whole number from 1 to 10, not NaN")
    // A value that is not a number is shown typed and cut short: it reaches logs.
    expect(refusal(() => checkOptions("Thing", limits, { waitMs: "x".repeat(1000) as unknown as number })).message).toMatch(/not string "x{39}\.\.\.$/)
  })

  it("IipServer refuses each budget that is not a whole number in range", () => {
    for (const option of serverCounts) {
      for (const value of [...notCounts, 0]) {
        const error = refusal(() => new IipServer({ port: 0, log: () => {}, [option]: value } as ServerOptions))
        expect(error.option).toBe(`IipServer ${option}`)
        expect(Object.is(error.value, value)).toBe(true)
      }
    }
    expect(refusal(() => new IipServer({ maxMetaBytes: 0x10000 })).option).toBe("IipServer maxMetaBytes")
    expect(refusal(() => new IipServer({ maxChannelsPerConnection: 2 ** 31 })).option).toBe("IipServer maxChannelsPerConnection")
  })

  it("IipServer refuses each timeout that is not a finite number of ms a timer holds", () => {
    for (const option of serverDurations) {
      for (const value of notDurations) {
        const error = refusal(() => new IipServer({ port: 0, log: () => {}, [option]: value } as ServerOptions))
        expect(error.option).toBe(`IipServer ${option}`)
      }
    }
    expect(refusal(() => new IipServer({ keepAlive: { intervalMs: NaN, timeoutMs: 5000 } })).option).toBe("IipServer keepAlive intervalMs")
    expect(refusal(() => new IipServer({ keepAlive: { intervalMs: 1000, timeoutMs: 0 } })).option).toBe("IipServer keepAlive timeoutMs")
    expect(refusal(() => new IipServer({ connectionLimits: { maxMessageBytes: NaN } })).option).toBe("IipServer connectionLimits maxMessageBytes")
    expect(refusal(() => new IipServer({ compression: { minBytes: NaN } })).option).toBe("IipServer compression minBytes")
  })

  it("attachWebSocket refuses a message size or connection count out of range and attaches nothing", () => {
    const server = new IipServer({ log: () => {} })
    const web = http.createServer()
    expect(refusal(() => server.attachWebSocket(web, { maxConnections: NaN })).option).toBe("IipServer attachWebSocket maxConnections")
    expect(refusal(() => server.attachWebSocket(web, { maxMessageBytes: -1 })).option).toBe("IipServer attachWebSocket maxMessageBytes")
    expect(web.listenerCount("upgrade")).toBe(0)
  })

  it("the Effect constructors die with the OptionInvalid, not a failure of their own type", async () => {
    const server = await defectOf(Effect.scoped(make({ port: 0, maxQueuedBytes: NaN, log: () => {} })))
    expect(server.option).toBe("IipServer maxQueuedBytes")
    // Its failure type is InvalidBackendList: an option out of range must not pass for one.
    const balancer = await defectOf(Effect.scoped(makeLoadBalancer({ backends: "127.0.0.1:9#1", client: { maxPending: NaN, log: () => {} } })))
    expect(balancer.option).toBe("IipClient maxPending")
    const client = await defectOf(Effect.scoped(makeClient({ host: "127.0.0.1", port: 9, connectTimeoutMs: NaN, log: () => {} })))
    expect(client.option).toBe("IipClient connectTimeoutMs")
    // The layers of src/effect, whose failure types (ListenFailed, none) stay as they were.
    const serverLayer = await defectOf(Effect.scoped(Layer.build(EffectServer.layer({ port: 0, idleTimeoutMs: -1, log: () => {} }))))
    expect(serverLayer.option).toBe("IipServer idleTimeoutMs")
    const clientLayer = await defectOf(Effect.scoped(Layer.build(EffectClient.layer({ host: "127.0.0.1", port: 9, maxPending: 0, log: () => {} }))))
    expect(clientLayer.option).toBe("IipClient maxPending")
  })

  // layerConfig's type says a bad setting is a ConfigError: one out of range (a deadline past 24 h,
  // 0 connections, a drain past a timer) died with OptionInvalid instead.
  it("layerConfig fails with a ConfigError naming the setting, not a defect", async () => {
    const failureOf = async <A, E>(layer: Layer.Layer<A, E>, env: Record<string, string>): Promise<string> => {
      const exit = await Effect.runPromiseExit(Effect.scoped(Layer.build(layer.pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(env)))))))
      expect(Exit.isFailure(exit)).toBe(true)
      const reasons = Exit.isFailure(exit) ? exit.cause.reasons : []
      expect(reasons.some(Cause.isDieReason)).toBe(false)
      const error = reasons.find(Cause.isFailReason)?.error
      expect((error as Config.ConfigError)._tag).toBe("ConfigError")
      return (error as Config.ConfigError).message
    }
    expect(await failureOf(EffectClient.layerConfig(), { IIP_CLIENT_PORT: "9", IIP_CLIENT_DEADLINE: "2 days" })).toMatch(/: IIP_CLIENT_DEADLINE: IipClient requestTimeoutMs must be/)
    expect(await failureOf(EffectClient.layerConfig(), { IIP_CLIENT_PORT: "9", IIP_CLIENT_MAX_CONNECTIONS: "0" })).toMatch(/: IIP_CLIENT_MAX_CONNECTIONS: IipClient maxConnections must be/)
    expect(await failureOf(EffectServer.layerConfig(), { IIP_SERVER_PORT: "0", IIP_SERVER_DRAIN_TIMEOUT: "30 days" })).toMatch(/: IIP_SERVER_DRAIN_TIMEOUT: IipServer drainTimeoutMs must be/)
  })

  it("IipClient refuses counts and timeouts out of range, Infinity only where documented", () => {
    const client = (options: Partial<ClientOptions>) => () => new IipClient({ host: "127.0.0.1", port: 9, log: () => {}, ...options })
    for (const option of ["maxConnections", "maxChannelsPerConnection", "maxPending", "maxQueuedRequestsPerConnection", "maxQueuedBytesPerConnection"] as const) {
      for (const value of [NaN, -1, 0, 2.5]) expect(refusal(client({ [option]: value })).option).toBe(`IipClient ${option}`)
    }
    for (const option of ["streamChannelsPerConnection", "idleChannelsAhead"] as const) {
      for (const value of [NaN, Infinity, -1, 0.5]) expect(refusal(client({ [option]: value })).option).toBe(`IipClient ${option}`)
    }
    for (const value of [NaN, -1, 0, 86_400_001]) expect(refusal(client({ connectTimeoutMs: value })).option).toBe("IipClient connectTimeoutMs")
    for (const value of [NaN, -1, 86_400_001]) expect(refusal(client({ requestTimeoutMs: value })).option).toBe("IipClient requestTimeoutMs")
    expect(refusal(client({ reconnect: { baseMs: 0, maxMs: 5000 } })).option).toBe("IipClient reconnect baseMs")
    expect(refusal(client({ reconnect: { baseMs: 100, maxMs: NaN } })).option).toBe("IipClient reconnect maxMs")
    expect(refusal(client({ keepAlive: { intervalMs: 1000, timeoutMs: 1000, busyTimeoutMs: -5 } })).option).toBe("IipClient keepAlive busyTimeoutMs")
  })

  it("the load-balance client refuses its own and its backends' client options at construction", () => {
    expect(refusal(() => new LoadBalanceClient({ backends: "127.0.0.1:9#1", maxTries: NaN })).option).toBe("LoadBalanceClient maxTries")
    expect(refusal(() => new LoadBalanceClient({ backends: "127.0.0.1:9#1", requestTimeoutMs: -1 })).option).toBe("LoadBalanceClient requestTimeoutMs")
    expect(refusal(() => new LoadBalanceClient({ backends: "127.0.0.1:9#1", client: { maxConnections: NaN } })).option).toBe("IipClient maxConnections")
  })

  it("the HTTP adapter refuses a body limit or a timeout out of range", () => {
    for (const value of [NaN, Infinity, -1, 0.5]) expect(refusal(() => new HttpAdapter({ maxBodyBytes: value })).option).toBe("HttpAdapter maxBodyBytes")
    for (const value of [NaN, -1, 86_400_001]) expect(refusal(() => new HttpAdapter({ requestTimeoutMs: value })).option).toBe("HttpAdapter requestTimeoutMs")
  })

  // A request's timeout of NaN (a deadline computed from an undefined) meant no timeout at all: a
  // request to a server that never answers waited forever. It is refused as sent, nothing sent.
  it("a request with a timeout of NaN is refused with PacketEncodeError, before anything is sent", async () => {
    const server = await startServer(cleanup)
    let received = 0
    server.handle("/never", () => {
      received++
      return new Promise<string>(() => {})
    })
    server.handle("/echo", (request) => request.data)
    for (const mesh of [true, false]) {
      const client = startClient(cleanup, server.address.port, { mesh })
      const refused = [
        await settle(withTimeout(client.call("/never", "x", { timeoutMs: NaN }), 5000, "the refusal of call")),
        await settle(withTimeout(client.stream("/never", Buffer.from("x"), { timeoutMs: NaN }), 5000, "the refusal of stream"))
      ]
      for (const result of refused) {
        expect(result.ok).toBe(false)
        expect(result.ok ? undefined : result.error).toBeInstanceOf(PacketEncodeError)
        expect(result.ok ? undefined : (result.error as PacketEncodeError).rule).toBe("timeout-not-a-number")
      }
      // The client goes on serving requests with a timeout.
      expect((await client.call("/echo", "after")).toString()).toBe("after")
    }
    expect(received).toBe(0)
  })

  // The load-balance client turned both into no deadline at all: NaN (`NaN > 0` is false) and
  // Infinity (a deadline at Infinity sends a timeout of 0, none), where its client and README hold
  // Infinity to 24 h. The server sees the deadline the call carries (mesh mode).
  it("the load-balance client refuses a call's timeout of NaN and holds Infinity to 24 h", async () => {
    const server = await startServer(cleanup)
    let received = 0
    const deadlines: Array<number> = []
    server.handle("/never", () => {
      received++
      return new Promise<string>(() => {})
    })
    server.handle("/deadline", (request) => {
      deadlines.push(request.context.deadline - monotonicMs())
      return "ok"
    })
    const lb = new LoadBalanceClient({ backends: `127.0.0.1:${server.address.port}#1`, client: { log: () => {} } })
    cleanup.add(() => lb.close())
    const result = await settle(withTimeout(lb.call("/never", "x", { timeoutMs: NaN }), 5000, "the refusal"))
    expect(result.ok ? undefined : (result.error as PacketEncodeError).rule).toBe("timeout-not-a-number")
    expect(received).toBe(0)
    await lb.call("/deadline", "x", { timeoutMs: Infinity })
    const forever = new LoadBalanceClient({ backends: `127.0.0.1:${server.address.port}#1`, requestTimeoutMs: Infinity, client: { log: () => {} } })
    cleanup.add(() => forever.close())
    await forever.call("/deadline", "x")
    expect(deadlines).toHaveLength(2)
    for (const left of deadlines) expect(left).toBeGreaterThan(MaxDeadlineMs - 60_000)
  })

  it("defaults and documented edge values still construct, and a request goes through", async () => {
    const server = await startServer(cleanup, { idleTimeoutMs: 0, writeTimeoutMs: 0, firstPacketTimeoutMs: 0, packetTimeoutMs: 0, drainTimeoutMs: 0, maxConnections: 1 })
    server.handle("/echo", (request) => request.data)
    const client = startClient(cleanup, server.address.port, { maxPending: Infinity, idleChannelsAhead: 0, requestTimeoutMs: 0, streamChannelsPerConnection: 0 })
    expect((await client.call("/echo", "hi")).toString()).toBe("hi")
  })

  it("idleChannelsAhead 0 opens a channel only for a request that waits (it was raised to 1)", async () => {
    const server = await startServer(cleanup)
    server.handle("/echo", (request) => request.data)
    const none = startClient(cleanup, server.address.port, { idleChannelsAhead: 0 })
    for (let i = 0; i < 5; i++) expect((await none.call("/echo", `hi ${i}`)).toString()).toBe(`hi ${i}`)
    // The first call waited and got the one channel; the later ones found it idle: nothing opened ahead.
    expect(none.stats.channels).toBe(1)
  })
})
