// Helpers for the sidecar tests (test/sidecar): real node:http apps on 127.0.0.1 port 0,
// in-process sidecars whose lifetime is a Scope the test closes (or the Cleanup closes for it),
// the usual app <- sidecar B <- sidecar A topology, and a small HTTP client that returns status,
// raw headers and body. Everything started is registered with a Cleanup, so it goes away even
// when the test fails.
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as http from "node:http"
import * as net from "node:net"
import * as Admin from "../../src/admin/adminServer.ts"
import { configDefaults } from "../../src/config/settings.ts"
import type { SidecarConfig } from "../../src/config/sidecarConfig.ts"
import type { Log } from "../../src/iip/log.ts"
import * as SidecarLive from "../../src/sidecar/sidecar.ts"
import { type Cleanup, withTimeout } from "./iipRaw.ts"

export const LOOPBACK = "127.0.0.1"

/**
 * A 127.0.0.1 port nothing listens on, held until the Cleanup runs: a dial to it is refused.
 * A port bound and closed again was free for any process's next listen on port 0: on a machine
 * running other tests one took it within the test (a TLS server: the dial got `tls_refused`, not
 * `connect_failed`), and a test's refused endpoint could be another test's sidecar. Here a
 * connected socket holds the port (bound to LOOPBACK before it connects: bind's pool of ports,
 * which no other dial takes as its source); Linux's bind to port 0 hands out no port a socket
 * holds (20,000 binds beside 2,000 held ports got none of them).
 */
export const refusingAddress = async (cleanup: Cleanup): Promise<string> => {
  const peers: Array<net.Socket> = []
  const server = net.createServer((socket) => peers.push(socket))
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve))
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const holder = net.connect({ host: LOOPBACK, port: (server.address() as net.AddressInfo).port, localAddress: LOOPBACK })
  cleanup.add(() => {
    holder.destroy()
    for (const peer of peers) peer.destroy()
  })
  await new Promise<void>((resolve, reject) => {
    holder.once("connect", resolve)
    holder.once("error", reject)
  })
  return `${LOOPBACK}:${holder.localPort}`
}

/** A node:http app on 127.0.0.1:0; `close` ends it and every connection it has. */
export interface App {
  readonly server: http.Server
  readonly port: number
  readonly address: string
  /** Every request the app received, in order (method, url, headers as node parsed them). */
  readonly seen: Array<{ readonly method: string; readonly url: string; readonly headers: http.IncomingHttpHeaders; readonly rawHeaders: ReadonlyArray<string> }>
  readonly close: () => Promise<void>
}

export const startApp = async (cleanup: Cleanup, handler: http.RequestListener, port = 0): Promise<App> => {
  const seen: Array<App["seen"][number]> = []
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, rawHeaders: req.rawHeaders })
    handler(req, res)
  })
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(port, LOOPBACK, () => {
      server.off("error", reject)
      resolve()
    })
  })
  const bound = (server.address() as net.AddressInfo).port
  let closed: Promise<void> | undefined
  const close = () =>
    (closed ??= new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    }))
  cleanup.add(close)
  return { server, port: bound, address: `${LOOPBACK}:${bound}`, seen, close }
}

/** A sidecar configuration for tests: every listener on 127.0.0.1:0, quiet, short drain. */
export const sidecarConfig = (overrides: Partial<SidecarConfig> & Pick<SidecarConfig, "service">): SidecarConfig => ({
  ...configDefaults(),
  node: `test-${overrides.service}`,
  outbound: `${LOOPBACK}:0`,
  inbound: `${LOOPBACK}:0`,
  admin: `${LOOPBACK}:0`,
  adminControl: `${LOOPBACK}:0`,
  requestTimeoutMs: 10_000,
  drainTimeoutMs: 1000,
  ...overrides
})

export interface RunningSidecar {
  readonly sidecar: SidecarLive.Sidecar
  readonly scope: Scope.Closeable
  /** "127.0.0.1:PORT" of the inbound IIP listener, as another sidecar's endpoint. */
  readonly inboundAddress: string
  readonly outboundPort: number
  /** Closes the sidecar's Scope (a graceful stop); idempotent. */
  readonly stop: () => Promise<void>
}

/** Library log events of all sidecars a test starts (kept for diagnosis, never printed). */
export const quietLog: Log = () => {}

/**
 * Starts a sidecar in its own Scope; the Cleanup closes the Scope unless the test already did.
 * `options` is the sidecar's third argument: a trace store to share, the OTEL_* variables it reads
 * (instead of process.env).
 */
export const startSidecar = async (
  cleanup: Cleanup,
  config: SidecarConfig,
  log: Log = quietLog,
  options: SidecarLive.SidecarOptions = {}
): Promise<RunningSidecar> => {
  const scope = await Effect.runPromise(Scope.make())
  let stopped: Promise<void> | undefined
  const stop = () => (stopped ??= Effect.runPromise(Scope.close(scope, Exit.void)))
  cleanup.add(stop)
  const sidecar = await Effect.runPromise(SidecarLive.make(config, log, options).pipe(Scope.provide(scope)))
  return {
    sidecar,
    scope,
    inboundAddress: `${LOOPBACK}:${sidecar.inbound.port}`,
    outboundPort: sidecar.outbound.port,
    stop
  }
}

/**
 * The admin listeners (src/admin/adminServer.ts) of a running sidecar, in a Scope of their own that
 * the Cleanup closes: their base URLs, e.g. "http://127.0.0.1:PORT". Both on 127.0.0.1:0 and no
 * token unless `listeners` says otherwise.
 */
export const startAdminListeners = async (
  cleanup: Cleanup,
  running: RunningSidecar,
  listeners: Partial<Admin.AdminListeners> = {}
): Promise<{ readonly readOnly: string; readonly control: string }> => {
  const scope = await Effect.runPromise(Scope.make())
  cleanup.add(() => Effect.runPromise(Scope.close(scope, Exit.void)))
  const addresses = await Effect.runPromise(
    Admin.make({ admin: `${LOOPBACK}:0`, control: `${LOOPBACK}:0`, token: undefined, ...listeners }, () => running.sidecar).pipe(Scope.provide(scope))
  )
  const url = (address: { readonly host: string; readonly port: number }) => `http://${address.host.includes(":") ? `[${address.host}]` : address.host}:${address.port}`
  return { readOnly: url(addresses.readOnly), control: url(addresses.control) }
}

/** The admin control listener of a running sidecar (it serves every admin path, the read-only ones too): its base URL. */
export const startAdmin = async (cleanup: Cleanup, running: RunningSidecar): Promise<string> => (await startAdminListeners(cleanup, running)).control

export interface Mesh {
  readonly app: App
  /** The callee's sidecar, in front of `app` (service "catalog"). */
  readonly b: RunningSidecar
  /** The caller's sidecar (service "store"), endpoints catalog = B's inbound. */
  readonly a: RunningSidecar
}

/** app <- sidecar B ("catalog") <- sidecar A ("store"). */
export const startMesh = async (
  cleanup: Cleanup,
  handler: http.RequestListener,
  options: { readonly a?: Partial<SidecarConfig>; readonly b?: Partial<SidecarConfig> } = {}
): Promise<Mesh> => {
  const app = await startApp(cleanup, handler)
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, ...options.b }))
  const a = await startSidecar(
    cleanup,
    sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] }, ...options.a })
  )
  return { app, b, a }
}

export interface Answer {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly rawHeaders: ReadonlyArray<string>
  readonly body: Buffer
}

export interface CallOptions {
  readonly method?: string
  readonly path?: string
  readonly headers?: http.OutgoingHttpHeaders | ReadonlyArray<string>
  readonly body?: string | Buffer
  readonly agent?: http.Agent | false
  /** Destroys the request and rejects after this long (a hang must fail the test, not stall it). */
  readonly timeoutMs?: number
  /** Told which socket carries the request (keep-alive checks). */
  readonly onSocket?: (socket: net.Socket) => void
}

/** One HTTP request to 127.0.0.1:`port`; the whole answer read. Rejects on a socket error or after `timeoutMs`. */
export const call = (port: number, options: CallOptions = {}): Promise<Answer> =>
  new Promise<Answer>((resolve, reject) => {
    const timeoutMs = options.timeoutMs ?? 10_000
    const req = http.request({
      host: LOOPBACK,
      port,
      method: options.method ?? "GET",
      path: options.path ?? "/",
      headers: (options.headers ?? { host: "catalog" }) as http.OutgoingHttpHeaders,
      agent: options.agent ?? false
    })
    const timer = setTimeout(() => {
      req.destroy()
      reject(new Error(`no answer to ${options.method ?? "GET"} ${options.path ?? "/"} within ${timeoutMs} ms`))
    }, timeoutMs)
    if (options.onSocket !== undefined) req.on("socket", options.onSocket)
    req.on("error", (error) => {
      clearTimeout(timer)
      reject(error)
    })
    req.on("response", (res) => {
      const parts: Array<Buffer> = []
      res.on("data", (chunk: Buffer) => parts.push(chunk))
      res.on("error", (error) => {
        clearTimeout(timer)
        reject(error)
      })
      res.on("end", () => {
        clearTimeout(timer)
        resolve({ status: res.statusCode ?? 0, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(parts) })
      })
    })
    req.end(options.body)
  })

/** The values of every header named `name` (any case) in raw header pairs, in order. */
export const rawValues = (rawHeaders: ReadonlyArray<string>, name: string): Array<string> => {
  const out: Array<string> = []
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) out.push(rawHeaders[i + 1]!)
  return out
}

/** An app handler that answers with JSON describing the request it got (method, url, headers, body). */
export const echoRequest: http.RequestListener = (req, res) => {
  const parts: Array<Buffer> = []
  req.on("data", (chunk: Buffer) => parts.push(chunk))
  req.on("end", () => {
    const body = JSON.stringify({
      method: req.method,
      url: req.url,
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      body: Buffer.concat(parts).toString("utf8")
    })
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
    res.end(body)
  })
}

export interface EchoedRequest {
  readonly method: string
  readonly url: string
  readonly headers: http.IncomingHttpHeaders
  readonly rawHeaders: ReadonlyArray<string>
  readonly body: string
}

export const echoed = (answer: Answer): EchoedRequest => JSON.parse(answer.body.toString("utf8")) as EchoedRequest

/**
 * A log of outcomes that load workers append to, and waits for a condition on it: `until` resolves
 * as soon as a `record` makes `done` true (no polling, no sleeps), or fails after `timeoutMs`.
 */
export const progress = <T>(outcomes: Array<T>) => {
  const waiters: Array<{ readonly done: () => boolean; readonly resolve: () => void }> = []
  const until = (done: () => boolean, what: string, timeoutMs = 15_000) =>
    withTimeout(
      new Promise<void>((resolve) => {
        if (done()) return resolve()
        waiters.push({ done, resolve })
      }),
      timeoutMs,
      what
    )
  const record = (outcome: T) => {
    outcomes.push(outcome)
    for (const waiter of waiters.splice(0)) {
      if (waiter.done()) waiter.resolve()
      else waiters.push(waiter)
    }
  }
  return { record, until }
}

/** One request of a load worker: when it started, and its answer or why it threw (never rejects). */
export const timedCall = async (port: number, path: string, agent: http.Agent) => {
  const startedAt = performance.now()
  try {
    return { startedAt, answer: await call(port, { path, agent, timeoutMs: 10_000 }) as Answer | undefined, thrown: undefined }
  } catch (error) {
    return { startedAt, answer: undefined, thrown: error instanceof Error ? error.message : String(error) }
  }
}

/**
 * The access log lines sidecars in this process write to stdout (accessLog: true), each as `read`
 * makes it, taken out of stdout while the test runs; the Cleanup gives stdout back.
 */
export const captureAccessLog = <A>(cleanup: Cleanup, read: (line: string) => A): Array<A> => {
  const records: Array<A> = []
  const stdout = process.stdout as { write: typeof process.stdout.write }
  const original = stdout.write
  stdout.write = ((chunk: string | Uint8Array, ...rest: Array<never>) => {
    const text = typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8")
    if (text.startsWith(`{"time":`) && text.includes(`"attempts":`)) {
      for (const line of text.split("\n")) if (line !== "") records.push(read(line))
      return true
    }
    return original.call(process.stdout, chunk, ...rest)
  }) as typeof process.stdout.write
  cleanup.add(() => (stdout.write = original))
  return records
}
