// `iip-mesh stat [SERVICE]`, `iip-mesh top` and `iip-mesh tap`: the golden metrics and the live tap
// of one or more admin control listeners (--admin URL[,URL...], --admin-token or
// IIP_MESH_ADMIN_TOKEN), like `linkerd viz stat|top|tap`. stat prints one table (services, or with
// SERVICE its routes and the edges to and from it); top prints the busiest routes every
// --interval; tap prints one line per request record until stopped (or --count records). Views of
// several admins are merged (telemetry/golden.ts mergeViews); an admin that does not answer is
// named on stderr and the rest shown. With --mesh each admin answers for the whole mesh it finds
// through discovery (its /federation), peers that do not answer named on stderr as stale. What an
// admin sends reaches the terminal escaped (names and paths come from other hosts), and a tap event
// that is not a record is skipped and counted, never an exception.
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { Argument, Command, Flag } from "effect/cli"
import { viewOf } from "../admin/goldenViewCheck.ts"
import { AdminCallFailed, getAdminJson, openAdminEvents, type SseHandle } from "../admin/adminClient.ts"
import { messageOf } from "../iip/log.ts"
import { loggable } from "../iip/redact.ts"
import { type GoldenView, mergeViews, type WindowName, type Windows, WINDOWS } from "../telemetry/golden.ts"
import type { TapRecord } from "../telemetry/tap.ts"
import { ArgumentError, parseDuration, parseWith } from "./args.ts"

const admin = Flag.String("admin").pipe(
  Flag.withDescription("admin control URL(s), comma-separated"),
  Flag.withDefault("http://127.0.0.1:9991")
)
const adminToken = Flag.String("admin-token").pipe(Flag.withDescription("bearer token of the control listeners (default: IIP_MESH_ADMIN_TOKEN)"), Flag.optional)
const window = Flag.String("window").pipe(Flag.withDescription("10s, 1m or 10m"), Flag.withDefault("1m"))
const wholeMesh = Flag.Boolean("mesh").pipe(Flag.withDescription("the whole mesh each admin finds through discovery (its /federation)"), Flag.withDefault(false))

const CALL = { timeoutMs: 5000, maxBytes: 64 << 20 }

/**
 * Text from an admin as the terminal is given it: control characters, C1 controls and bidi
 * overrides escaped (\u001b...), not acted on. Names and paths come from other hosts (federation
 * peers, IIP callers) through the admin: ESC ] 52 writes many terminals' clipboard.
 */
const shown = (text: string): string => loggable(text, 2048)

const urlsOf = (list: string): Array<string> => list.split(",").map((u) => u.trim().replace(/\/+$/, "")).filter((u) => u !== "")

const tokenOf = (flag: Option.Option<string>): string | undefined => Option.getOrUndefined(flag) ?? process.env.IIP_MESH_ADMIN_TOKEN

const windowOf = (name: string): Effect.Effect<WindowName, ArgumentError> =>
  name in WINDOWS ? Effect.succeed(name as WindowName) : Effect.fail(new ArgumentError({ message: `--window is one of ${Object.keys(WINDOWS).join(", ")}` }))

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null

/** An admin's /federation answer: its merged view checked as a peer's is (federation.ts), its peers objects; undefined if not. */
const federationOf = (value: unknown): { readonly golden: GoldenView; readonly peers: ReadonlyArray<Record<string, unknown>> } | undefined => {
  if (!isObject(value) || !Array.isArray(value.peers) || !value.peers.every(isObject)) return undefined
  const golden = viewOf(value.golden, Number.POSITIVE_INFINITY)
  return golden === undefined ? undefined : { golden, peers: value.peers }
}

/** Every admin's golden view, merged (an answer that is not one named on stderr, like an admin that failed); those that failed named on stderr. Fails when none answered. */
const fetchGolden = (urls: ReadonlyArray<string>, token: string | undefined, federated: boolean) =>
  Effect.gen(function*() {
    const path = federated ? "/federation" : "/golden"
    const answers = yield* Effect.promise(() => Promise.allSettled(urls.map((url) => getAdminJson(`${url}${path}`, { token, ...CALL }))))
    const views: Array<GoldenView> = []
    for (const [i, answer] of answers.entries()) {
      if (answer.status === "rejected") {
        process.stderr.write(`iip-mesh: ${urls[i]}: ${shown(messageOf(answer.reason))}\n`)
      } else {
        const federation = federated ? federationOf(answer.value) : undefined
        const view = federated ? federation?.golden : viewOf(answer.value, Number.POSITIVE_INFINITY)
        if (view === undefined) {
          process.stderr.write(`iip-mesh: ${urls[i]}: its answer is not a ${federated ? "federation" : "golden"} view\n`)
          continue
        }
        for (const peer of federation?.peers ?? []) {
          if (peer.stale === true) process.stderr.write(`iip-mesh: ${urls[i]}: peer ${shown(String(peer.node ?? peer.admin))} is stale (${shown(String(peer.error ?? "not heard from lately"))}): its last view is shown\n`)
        }
        views.push(view)
      }
    }
    if (views.length === 0) return yield* new AdminCallFailed({ url: urls.join(","), message: "no admin answered" })
    return mergeViews(views)
  })

const ms = (seconds: number | null) => (seconds === null ? "-" : `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1)}ms`)

const percent = (rate: number) => `${(rate * 100).toFixed(2)}%`

/** Rows as aligned columns, every cell shown escaped. */
export const table = (header: ReadonlyArray<string>, cells: ReadonlyArray<ReadonlyArray<string>>): string => {
  const rows = cells.map((row) => row.map(shown))
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  return [header, ...rows].map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n")
}

const STAT_COLUMNS = ["SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "REQUESTS"]

const statCells = (windows: Windows, name: WindowName): Array<string> => {
  const s = windows[name].stats
  return [s.requests === 0 ? "-" : percent(s.successRate), s.rps.toFixed(2), ms(s.p50), ms(s.p95), ms(s.p99), String(s.requests)]
}

/** The text `stat` prints for a view. */
export const statText = (view: GoldenView, name: WindowName, service: string | undefined): string => {
  if (service === undefined) {
    const services = table(["SERVICE", ...STAT_COLUMNS], [...view.services].sort((a, b) => a.service.localeCompare(b.service)).map((s) => [s.service, ...statCells(s.windows, name)]))
    const edges = table(["FROM", "TO", ...STAT_COLUMNS], [...view.edges].sort((a, b) => `${a.caller} ${a.callee}`.localeCompare(`${b.caller} ${b.callee}`)).map((e) => [e.caller, e.callee, ...statCells(e.windows, name)]))
    return `${services}\n\n${edges}`
  }
  const own = view.services.filter((s) => s.service === service).map((s) => [s.service, ...statCells(s.windows, name)])
  const routes = view.routes.filter((r) => r.service === service).sort((a, b) => b.windows[name].stats.rps - a.windows[name].stats.rps).map((r) => [r.route, ...statCells(r.windows, name)])
  const edges = view.edges.filter((e) => e.caller === service || e.callee === service).map((e) => [e.caller, e.callee, ...statCells(e.windows, name)])
  return [table(["SERVICE", ...STAT_COLUMNS], own), table(["ROUTE", ...STAT_COLUMNS], routes), table(["FROM", "TO", ...STAT_COLUMNS], edges)].join("\n\n")
}

/** The text `top` prints: routes by requests per second, the busiest first. */
export const topText = (view: GoldenView, name: WindowName, limit: number): string =>
  table(
    ["SERVICE", "ROUTE", ...STAT_COLUMNS],
    [...view.routes].filter((r) => r.windows[name].stats.requests > 0).sort((a, b) => b.windows[name].stats.rps - a.windows[name].stats.rps).slice(0, limit)
      .map((r) => [r.service, r.route, ...statCells(r.windows, name)])
  )

const fail = (command: string) => (error: unknown) =>
  Effect.sync(() => {
    process.stderr.write(`iip-mesh ${command}: ${shown(messageOf(error))}\n`)
    process.exitCode = 1
  })

export const stat = Command.make(
  "stat",
  { service: Argument.String("service").pipe(Argument.withDescription("show this service's routes and edges"), Argument.optional), admin, adminToken, window, mesh: wholeMesh },
  (input) =>
    Effect.gen(function*() {
      const name = yield* windowOf(input.window)
      const view = yield* fetchGolden(urlsOf(input.admin), tokenOf(input.adminToken), input.mesh)
      yield* Console.log(statText(view, name, Option.getOrUndefined(input.service)))
    }).pipe(Effect.catch(fail("stat")))
).pipe(Command.withDescription("Golden metrics (success rate, rps, latency p50/p95/p99) per service and edge, from admin control listeners"))

export const top = Command.make(
  "top",
  {
    admin,
    adminToken,
    window: Flag.String("window").pipe(Flag.withDescription("10s, 1m or 10m"), Flag.withDefault("10s")),
    interval: Flag.String("interval").pipe(Flag.withDescription("refresh period"), Flag.withDefault("2s")),
    iterations: Flag.Int("iterations").pipe(Flag.withDescription("stop after this many refreshes (default: until stopped)"), Flag.optional),
    limit: Flag.Int("limit").pipe(Flag.withDescription("routes shown"), Flag.withDefault(20)),
    mesh: wholeMesh
  },
  (input) =>
    Effect.gen(function*() {
      const name = yield* windowOf(input.window)
      const intervalMs = yield* parseWith(() => parseDuration(input.interval))
      const urls = urlsOf(input.admin)
      const token = tokenOf(input.adminToken)
      const iterations = Option.getOrElse(input.iterations, () => Number.POSITIVE_INFINITY)
      for (let i = 0; i < iterations; i++) {
        if (i > 0) yield* Effect.sleep(intervalMs)
        const view = yield* fetchGolden(urls, token, input.mesh)
        const clear = process.stdout.isTTY ? "\x1b[2J\x1b[H" : ""
        yield* Console.log(`${clear}${topText(view, name, Math.max(1, input.limit))}\n`)
      }
    }).pipe(Effect.catch(fail("top")))
).pipe(Command.withDescription("The busiest routes, refreshing"))

/** One line per record, its text fields shown escaped. */
export const tapLine = (r: TapRecord): string =>
  [
    new Date(r.time).toISOString(),
    r.direction === "inbound" ? "in " : "out",
    `${shown(r.caller)}->${shown(r.service)}`,
    shown(r.method),
    shown(r.path),
    String(r.status),
    `${r.latencyMs.toFixed(1)}ms`,
    shown(r.endpoint),
    `trace=${shown(r.traceId ?? "-")}`,
    ...(r.errorHop === null ? [] : [`error=${shown(r.errorHop)}:${shown(r.errorReason ?? "")}`])
  ].join(" ")

const TEXT_FIELDS = ["caller", "service", "method", "path", "endpoint"] as const

/** An event's data as a tap record, or undefined: not JSON, or a field tapLine prints is missing or of another type. */
const tapRecordOf = (data: string): TapRecord | undefined => {
  let value: unknown
  try {
    value = JSON.parse(data)
  } catch {
    return undefined
  }
  if (typeof value !== "object" || value === null) return undefined
  const r = value as Record<string, unknown>
  const nullableText = (v: unknown) => v === null || typeof v === "string"
  const valid = typeof r.time === "number" && Number.isFinite(new Date(r.time).getTime()) && typeof r.status === "number" &&
    typeof r.latencyMs === "number" && TEXT_FIELDS.every((name) => typeof r[name] === "string") &&
    nullableText(r.traceId) && nullableText(r.errorHop) && nullableText(r.errorReason)
  return valid ? (value as TapRecord) : undefined
}

export const tap = Command.make(
  "tap",
  {
    admin,
    adminToken,
    service: Flag.String("service").pipe(Flag.withDescription("only requests to this service"), Flag.optional),
    path: Flag.String("path").pipe(Flag.withDescription("only paths that begin with this"), Flag.optional),
    status: Flag.String("status").pipe(Flag.withDescription("only this status class: 2xx ... 5xx"), Flag.optional),
    direction: Flag.String("direction").pipe(Flag.withDescription("inbound or outbound"), Flag.optional),
    count: Flag.Int("count").pipe(Flag.withDescription("stop after this many records"), Flag.optional)
  },
  (input) =>
    Effect.gen(function*() {
      const query = new URLSearchParams()
      for (const key of ["service", "path", "status", "direction"] as const) {
        const value = Option.getOrUndefined(input[key])
        if (value !== undefined) query.set(key, value)
      }
      const limit = Option.getOrElse(input.count, () => Number.POSITIVE_INFINITY)
      const token = tokenOf(input.adminToken)
      let printed = 0
      let skipped = 0
      yield* Effect.promise(async () => {
        const opened: Array<SseHandle> = []
        const closeAll = () => {
          for (const h of opened) h.close()
        }
        const handles = await Promise.all(urlsOf(input.admin).map(async (url) => {
          const handle = await openAdminEvents(`${url}/tap?${query}`, token, (event, data) => {
            if (printed >= limit) return
            if (event === "stats") return void process.stderr.write(`iip-mesh tap: ${url}: ${shown(data)}\n`)
            if (event !== "record") return
            const record = tapRecordOf(data)
            if (record === undefined) return void skipped++
            printed++
            process.stdout.write(`${tapLine(record)}\n`)
            if (printed >= limit) closeAll()
          })
          opened.push(handle)
          if (printed >= limit) handle.close()
          return handle
        }))
        await Promise.all(handles.map((h) => h.ended))
        if (skipped > 0) process.stderr.write(`iip-mesh tap: ${skipped} events that are not records skipped\n`)
      })
    }).pipe(Effect.catchDefect(fail("tap")), Effect.catch(fail("tap")))
).pipe(Command.withDescription("The live request stream of admin control listeners (sampled), filtered"))
