// The Node load generator of the sidecar bench, run in the bench's own process: an open loop at a
// fixed rate (latency from the intended send time, so queueing is not hidden; the sidecar bench's
// with --generator node or without a C compiler, else cLoad.ts's C one, which gives the same
// OpenSample), and a closed loop for priming each path (and for saturation where wrk is not
// installed). Every answer is checked: status 200 and the 1 KiB body back. The loops take any
// `Send` (the gRPC bench's calls).
import * as http from "node:http"
import { performance } from "node:perf_hooks"
import { PATH, PAYLOAD_BYTES } from "./request.ts"
import { percentile } from "./format.ts"

export interface Target {
  readonly agent: http.Agent
  readonly options: http.RequestOptions
}

export const makeTarget = (host: string, port: number, hostHeader: string | undefined, maxSockets: number): Target => {
  const agent = new http.Agent({ keepAlive: true, maxSockets })
  return {
    agent,
    options: {
      agent,
      host,
      port,
      method: "POST",
      path: PATH,
      headers: {
        "content-type": "application/octet-stream",
        "content-length": PAYLOAD_BYTES,
        ...(hostHeader === undefined ? {} : { host: hostHeader })
      }
    }
  }
}

/** Sends one request; `done` runs once, with an error message or undefined. */
export type Send = (done: (error: string | undefined) => void) => void

/** One request; `done` runs once, with an error message (wrong status or length, a socket error) or undefined. */
const send = (target: Target, payload: Buffer, callback: (error: string | undefined) => void): void => {
  let called = false
  const done = (error: string | undefined) => {
    if (called) return
    called = true
    callback(error)
  }
  const req = http.request(target.options, (res) => {
    let bytes = 0
    res.on("data", (chunk: Buffer) => (bytes += chunk.length))
    res.on("end", () => done(res.statusCode !== 200 ? `status ${res.statusCode}` : bytes !== PAYLOAD_BYTES ? `echoed ${bytes} bytes` : undefined))
    res.on("error", (error) => done(error.message))
  })
  req.on("error", (error) => done(error.message))
  req.end(payload)
}

interface Errors {
  count: number
  first: string | undefined
}

const noteError = (errors: Errors, message: string): void => {
  errors.count++
  errors.first ??= message
}

export interface OpenSample {
  readonly sent: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
  readonly errors: number
  readonly firstError: string | undefined
  readonly maxOutstanding: number
  /** The measured latencies, ms, sorted (mergeOpen pools the slices of one path with them). */
  readonly latencies: Float64Array
  /** Each measured request's due time and latency, in the order they were due (to line up with the processes' stalls). */
  readonly calls: CallTimes
}

/** Measured requests: when each was due (epoch ms, as the stall probe's endMs) and its latency, ms, at the same index. */
export interface CallTimes {
  readonly dueMs: Float64Array
  readonly ms: Float64Array
}

/** The percentiles of sorted latencies. */
export const summarizeLatencies = (sorted: Float64Array) => ({
  p50: percentile(sorted, 0.5),
  p90: percentile(sorted, 0.9),
  p99: percentile(sorted, 0.99),
  max: sorted.length === 0 ? NaN : sorted[sorted.length - 1]!,
  latencies: sorted
})

const concat = (arrays: ReadonlyArray<Float64Array>): Float64Array => {
  const all = new Float64Array(arrays.reduce((n, a) => n + a.length, 0))
  let at = 0
  for (const a of arrays) {
    all.set(a, at)
    at += a.length
  }
  return all
}

/** One sample of the slices of one path's window (the bench interleaves paths slice by slice): their latencies pooled. */
export const mergeOpen = (slices: ReadonlyArray<OpenSample>): OpenSample => {
  const pooled = concat(slices.map((s) => s.latencies))
  return {
    sent: slices.reduce((n, s) => n + s.sent, 0),
    errors: slices.reduce((n, s) => n + s.errors, 0),
    firstError: slices.find((s) => s.firstError !== undefined)?.firstError,
    maxOutstanding: Math.max(0, ...slices.map((s) => s.maxOutstanding)),
    ...summarizeLatencies(pooled.sort()),
    calls: { dueMs: concat(slices.map((s) => s.calls.dueMs)), ms: concat(slices.map((s) => s.calls.ms)) }
  }
}

/**
 * Open loop: request i is due at start + i / rate and goes out as soon as the timer lets us, even
 * while earlier ones are unanswered; its latency runs from when it was due to its last byte. Only
 * requests due inside the measuring window count. Waits for every answer (at most 15 s).
 */
export const openLoop = (target: Target, payload: Buffer, rate: number, warmupMs: number, measureMs: number): Promise<OpenSample> =>
  openLoopOf((done) => send(target, payload, done), rate, warmupMs, measureMs)

/** The open loop over any request. */
export const openLoopOf = (send: Send, rate: number, warmupMs: number, measureMs: number): Promise<OpenSample> =>
  new Promise((resolve) => {
    const interval = 1000 / rate
    const total = Math.round(((warmupMs + measureMs) / 1000) * rate)
    const latencies = new Float64Array(total)
    /** When each measured request was due (performance.now() ms), beside its latency. */
    const dues = new Float64Array(total)
    const errors: Errors = { count: 0, first: undefined }
    let measured = 0
    let next = 0
    let outstanding = 0
    let maxOutstanding = 0
    let finished = false
    const start = performance.now() + 1
    const measureStart = start + warmupMs
    const finish = () => {
      if (finished) return
      finished = true
      clearTimeout(watchdog)
      const calls = { dueMs: dues.slice(0, measured).map((due) => performance.timeOrigin + due), ms: latencies.slice(0, measured) }
      resolve({
        sent: total,
        ...summarizeLatencies(latencies.slice(0, measured).sort()),
        calls,
        errors: errors.count + outstanding,
        firstError: errors.first ?? (outstanding > 0 ? `${outstanding} requests unanswered 15 s after the last was due` : undefined),
        maxOutstanding
      })
    }
    const watchdog = setTimeout(finish, warmupMs + measureMs + 15_000)
    const issue = (due: number) => {
      outstanding++
      if (outstanding > maxOutstanding) maxOutstanding = outstanding
      send((error) => {
        outstanding--
        if (finished) return
        if (error !== undefined) noteError(errors, error)
        else if (due >= measureStart) {
          dues[measured] = due
          latencies[measured++] = performance.now() - due
        }
        if (next === total && outstanding === 0) finish()
      })
    }
    const tick = () => {
      const now = performance.now()
      while (next < total && start + next * interval <= now) issue(start + next++ * interval)
      if (next < total) setTimeout(tick, Math.max(0, start + next * interval - performance.now()))
    }
    setTimeout(tick, 1)
  })

export interface ClosedSample {
  /** Answers received in the whole run, warm-up included (CPU per request divides by it). */
  readonly completed: number
  readonly rps: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly errors: number
  readonly firstError: string | undefined
}

/** Closed loop: `inflight` requests always outstanding; counts those answered inside the measuring window. */
export const closedLoop = (target: Target, payload: Buffer, inflight: number, warmupMs: number, measureMs: number): Promise<ClosedSample> =>
  closedLoopOf((done) => send(target, payload, done), inflight, warmupMs, measureMs)

/** The closed loop over any request. */
export const closedLoopOf = (send: Send, inflight: number, warmupMs: number, measureMs: number): Promise<ClosedSample> =>
  new Promise((resolve) => {
    let latencies = new Float64Array(1 << 16)
    let count = 0
    let completed = 0
    let outstanding = 0
    let finished = false
    const errors: Errors = { count: 0, first: undefined }
    const start = performance.now()
    const measureStart = start + warmupMs
    const measureEnd = measureStart + measureMs
    const finish = () => {
      if (finished) return
      finished = true
      clearTimeout(watchdog)
      const sorted = latencies.subarray(0, count).sort()
      resolve({
        completed,
        rps: count / (measureMs / 1000),
        p50: percentile(sorted, 0.5),
        p90: percentile(sorted, 0.9),
        p99: percentile(sorted, 0.99),
        errors: errors.count + outstanding,
        firstError: errors.first ?? (outstanding > 0 ? `${outstanding} requests unanswered 15 s after the window` : undefined)
      })
    }
    const watchdog = setTimeout(finish, warmupMs + measureMs + 15_000)
    const issue = () => {
      const sentAt = performance.now()
      outstanding++
      send((error) => {
        outstanding--
        if (finished) return
        const now = performance.now()
        if (error === undefined) completed++
        if (error !== undefined) noteError(errors, error)
        else if (now >= measureStart && now < measureEnd) {
          if (count === latencies.length) {
            const bigger = new Float64Array(latencies.length * 2)
            bigger.set(latencies)
            latencies = bigger
          }
          latencies[count++] = now - sentAt
        }
        // A failing target fails fast: pause a little instead of spinning on errors.
        if (now < measureEnd) error === undefined ? issue() : setTimeout(issue, 10)
        else if (outstanding === 0) finish()
      })
    }
    for (let i = 0; i < inflight; i++) issue()
  })
