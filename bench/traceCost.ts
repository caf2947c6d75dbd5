// What tracing adds to one request at each sidecar, in process (issue 14): the per-request steps of
// the traced-but-not-recorded path (the default: no exporter, a trace store keeping 100 new traces a
// second, so at saturation nearly every request's spans only carry ids) against the same steps with
// tracing off. Sidecar A: the observation (client span), the header list's trace headers, the
// request's metadata (its header JSON) and the envelope encoded as the writer does, the span's end.
// Sidecar B: the envelope decoded, the header list taken from it, the observation (server and app
// spans), the flat list and the app request's head, the spans' end. Each mode runs in a child
// process of its own (a process runs one mode, as a sidecar does), the children alternating.
//
//   npm run -s bench -- traceCost [--pairs 4] [--iterations 200000] [--src DIR]   (about 10 s a pair)
//
// `--src DIR` runs another checkout's src (a worktree of the base) beside this one: each child
// loads both trees (their own modules) and runs them in turns, slice by slice, so a tree is read
// against the other at the same moments. Prints CPU ns per request for A and B, traced and
// untraced, per tree and pair (medians of each child's second half of slices).
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { join, resolve } from "node:path"

interface Result {
  readonly a: number
  readonly b: number
}

/** One tree's two sides, over its own modules (a tree's code sees one mode only, as in a sidecar). */
const sidesOf = async (src: string, traced: boolean): Promise<{ readonly sideA: () => void; readonly sideB: () => void }> => {
  const { OutboundObservation, InboundObservation } = await import(join(src, "sidecar/observe.ts"))
  const { makeMetrics } = await import(join(src, "telemetry/metrics.ts"))
  const { TraceStore } = await import(join(src, "telemetry/traceStore.ts"))
  const { makeTracing } = await import(join(src, "telemetry/tracing.ts"))
  const { requestMeta, headersOf, withForwarded } = await import(join(src, "sidecar/httpEnvelope.ts"))
  const { endToEndHeaders } = await import(join(src, "sidecar/headerFilter.ts"))
  const { writeHead } = await import(join(src, "sidecar/appRequestHead.ts"))
  const { envelopeMetaBytes, encodeEnvelopeHeadInto, decodeEnvelope } = await import(join(src, "protocol/mesh.ts"))

  const telemetryOf = () => {
    const traces = new TraceStore({ maxNewTracesPerSecond: 100 })
    return { tracing: makeTracing({ service: "echo", store: traces, env: {}, enabled: traced }), metrics: makeMetrics(), traces }
  }
  const a = telemetryOf()
  const b = telemetryOf()
  // wrk's request as the bench sends it (bench/sidecar/wrk.ts).
  const rawHeaders = ["Host", "echo", "Content-Length", "1024", "Content-Type", "application/octet-stream"]
  const record = { host: "echo", "content-length": "1024", "content-type": "application/octet-stream" }
  const body = Buffer.alloc(1024, 0x61)
  const out = Buffer.allocUnsafe(4096)
  const appBody = Buffer.alloc(1024, 0x62)

  let wire: Buffer = out
  const sideA = (): void => {
    const observation = new OutboundObservation(a, "POST", record, performance.now())
    observation.begin("echo", "/echo")
    const headers = withForwarded(endToEndHeaders(rawHeaders), "127.0.0.1:40000", "echo")
    observation.propagate(headers)
    const meta = requestMeta("POST", "echo", headers)
    const metaBytes = envelopeMetaBytes(meta, 65535, 30000)
    const at = encodeEnvelopeHeadInto(out, 0, 1, 0, 7, meta, metaBytes, 30000)
    out.set(body, at)
    wire = out.subarray(0, at + body.length)
    observation.end(200, "127.0.0.1:7000", 1, undefined)
  }
  const sideB = (): void => {
    const envelope = decodeEnvelope(wire, 65535)
    const headers = headersOf(envelope.meta)
    const observation = new InboundObservation(b, "echo", "POST", "/echo", headers, "127.0.0.1:40001")
    observation.callApp("127.0.0.1", 8080, headers)
    const flat: Array<string> = []
    for (let i = 0; i < headers.length; i++) flat.push(headers[i][0], headers[i][1])
    flat.push("host", "echo", "iip-timeout", "29999")
    const exchange = { request: { method: "POST", path: "/echo", headers: flat, checked: true, body: appBody }, head: "", wire: undefined, chunked: false }
    const refused = writeHead(exchange, "echo")
    if (refused !== undefined) throw refused
    observation.end("127.0.0.1:8080", 200, undefined)
  }
  return { sideA, sideB }
}

/**
 * Each tree's sides in one process, taking turns slice by slice (so the machine's moments fall on
 * every tree alike). A's output feeds B (its decoder sees a new traceparent per request only when
 * A ran between), so B is timed as a slice of A-then-B less the A-alone slice before it.
 */
const child = async (srcs: ReadonlyArray<string>, traced: boolean, iterations: number): Promise<Array<Result>> => {
  const trees = []
  for (const src of srcs) trees.push(await sidesOf(src, traced))
  const slice = 1000
  const timeA: Array<Array<number>> = trees.map(() => [])
  const timeB: Array<Array<number>> = trees.map(() => [])
  // CPU time, not the wall clock: on a shared machine a niced process waits for a core, and that wait is no cost of the code.
  const cpuMs = (): number => {
    const usage = process.cpuUsage()
    return (usage.user + usage.system) / 1000
  }
  for (let round = 0; round < iterations / slice; round++) {
    for (let t = 0; t < trees.length; t++) {
      const { sideA, sideB } = trees[t]!
      let t0 = cpuMs()
      for (let i = 0; i < slice; i++) sideA()
      const a = cpuMs() - t0
      timeA[t]!.push(a)
      // A, then B on its envelope, per request: B's time is the pair's less A's slice just measured.
      t0 = cpuMs()
      for (let i = 0; i < slice; i++) {
        sideA()
        sideB()
      }
      timeB[t]!.push(cpuMs() - t0 - a)
    }
  }
  const median = (xs: Array<number>) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!
  // The first half is warm-up.
  return trees.map((_, t) => ({ a: (median(timeA[t]!.slice(timeA[t]!.length / 2)) / slice) * 1e6, b: (median(timeB[t]!.slice(timeB[t]!.length / 2)) / slice) * 1e6 }))
}

/** `npm run -s bench -- traceCost [--pairs N] [--iterations N] [--src DIR]` */
export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const flag = (name: string, fallback: string): string => {
    const at = args.indexOf(name)
    return at === -1 ? fallback : args[at + 1]!
  }
  const pairs = Number(flag("--pairs", "4"))
  const iterations = Number(flag("--iterations", "200000"))
  const base = args.includes("--src") ? resolve(flag("--src", ""), "src") : undefined
  const trees = base === undefined ? [["this", here]] : [["base", base], ["this", here]]
  const run = (mode: string): Array<Result> =>
    JSON.parse(execFileSync(process.execPath, [fileURLToPath(import.meta.url), "--child", trees.map(([, src]) => src).join(","), mode, String(iterations)], { encoding: "utf8" })) as Array<Result>
  const ns = (x: number) => x.toFixed(0)
  // A difference with its sign: on a loaded machine the traced child can come out below the untraced one.
  const delta = (x: number) => (x < 0 ? ns(x) : `+${ns(x)}`)
  const all: Array<Record<string, { traced: Result; untraced: Result }>> = []
  for (let p = 0; p < pairs; p++) {
    // The order of the modes alternates from pair to pair.
    const [first, second] = p % 2 === 0 ? ["untraced", "traced"] : ["traced", "untraced"]
    const results = { [first!]: run(first!), [second!]: run(second!) }
    const pair: Record<string, { traced: Result; untraced: Result }> = {}
    const line = trees.map(([name], t) => {
      const on = results.traced![t]!
      const off = results.untraced![t]!
      pair[name!] = { traced: on, untraced: off }
      return `${name}: A ${ns(on.a)} traced / ${ns(off.a)} untraced (${delta(on.a - off.a)}), B ${ns(on.b)} / ${ns(off.b)} (${delta(on.b - off.b)})`
    })
    all.push(pair)
    console.log(`pair ${p + 1} (CPU ns per request): ${line.join(" | ")}`)
  }
  console.log(JSON.stringify({ bench: "traceCost", iterations, pairs: all }))
}

const here = resolve(fileURLToPath(new URL("../src", import.meta.url)))

// A child: `node bench/traceCost.ts --child SRC[,SRC] traced|untraced ITERATIONS`, one JSON line.
if (import.meta.main && process.argv[2] === "--child") {
  const result = await child(process.argv[3]!.split(","), process.argv[4] === "traced", Number(process.argv[5]))
  process.stdout.write(`${JSON.stringify(result)}\n`)
}
