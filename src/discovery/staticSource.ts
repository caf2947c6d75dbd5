// Static sources, at the start of the discovery flow: the `endpoints` of the sidecar's configuration
// (source "static"), and a JSON file of the same shape that is re-read when it changes (source
// "static:file"). Both report a Reset per service; the Discovery service merges them with the others.
import * as Data from "effect/Data"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import { statSync, watch, type FSWatcher } from "node:fs"
import { dirname } from "node:path"
import { isSubsetLabel } from "../balancer/subsets.ts"
import { parseSpiffeId } from "../identity/spiffe.ts"
import { messageOf, stderrLog, type Log } from "../iip/log.ts"
import { readSmallFile } from "../iip/smallFile.ts"
import type { DiscoveredEndpoint, DiscoverySource, EndpointUpdate } from "./types.ts"

/** One configured endpoint: "host:port" ("[v6]:port"), its weight, and how it is secured (types.ts). */
export interface StaticEndpointSpec {
  readonly address: string
  readonly weight: number
  readonly identity?: string
  readonly security?: "mtls" | "tls" | "plain"
  readonly ca?: string
  /** Its version label: the subset routes send traffic to. */
  readonly version?: string
}

/** Service name -> its endpoints, as in the configuration's `endpoints`. */
export type StaticEndpoints = Readonly<Record<string, ReadonlyArray<StaticEndpointSpec>>>

/** The endpoint file could not be read or does not hold endpoints; the last good set stays. */
export class StaticFileInvalid extends Data.TaggedError("StaticFileInvalid")<{ readonly path: string; readonly message: string }> {}

const addressPattern = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/

/** "host:port" or "[v6]:port" into its parts; undefined when it is neither or the port is over 65535. */
export const parseAddress = (address: string): { readonly host: string; readonly port: number } | undefined => {
  const match = addressPattern.exec(address)
  if (match === null || Number(match[3]) > 65535) return undefined
  return { host: match[1] ?? match[2]!, port: Number(match[3]) }
}

const servicePattern = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/

// The service names are checked on the whole record: a refined key schema would drop bad keys silently.
const EndpointFile = Schema.fromJsonString(
  Schema.Record(
    Schema.String,
    Schema.Array(
      Schema.Struct({
        address: Schema.String.pipe(
          Schema.check(Schema.makeFilter((text: string) => (parseAddress(text) === undefined ? `Expected HOST:PORT, got ${JSON.stringify(text.slice(0, 200))}` : undefined)))
        ),
        weight: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 1000 }))),
        identity: Schema.optionalKey(
          Schema.String.pipe(Schema.check(Schema.makeFilter((text: string) => (parseSpiffeId(text) === undefined ? `Expected a SPIFFE ID, got ${JSON.stringify(text.slice(0, 200))}` : undefined))))
        ),
        security: Schema.optionalKey(Schema.Literals(["mtls", "tls", "plain"])),
        ca: Schema.optionalKey(Schema.NonEmptyString),
        version: Schema.optionalKey(
          Schema.String.pipe(Schema.check(Schema.makeFilter((text: string) => (isSubsetLabel(text) ? undefined : `Expected a version label (1-63 of A-Z a-z 0-9 . _ -), got ${JSON.stringify(text.slice(0, 80))}`))))
        )
      })
    )
  ).pipe(
    Schema.check(
      Schema.makeFilter((endpoints: Readonly<Record<string, unknown>>) => {
        const bad = Object.keys(endpoints).find((service) => !servicePattern.test(service))
        return bad === undefined ? undefined : `Expected service names to be DNS labels (a-z, 0-9, -), got ${JSON.stringify(bad.slice(0, 80))}`
      })
    )
  )
)
const decodeEndpointFile = Schema.decodeUnknownResult(EndpointFile)

/** The endpoints of one service; specs whose address does not parse are left out. */
const toEndpoints = (service: string, specs: ReadonlyArray<StaticEndpointSpec>, source: string): Array<DiscoveredEndpoint> =>
  specs.flatMap((spec) => {
    const address = parseAddress(spec.address)
    if (address === undefined) return []
    return [{
      service,
      ...address,
      weight: spec.weight,
      features: [],
      source,
      ...(spec.identity === undefined ? {} : { identity: spec.identity }),
      ...(spec.security === undefined ? {} : { security: spec.security }),
      ...(spec.ca === undefined ? {} : { ca: spec.ca }),
      ...(spec.version === undefined ? {} : { version: spec.version })
    }]
  })

const resets = (endpoints: StaticEndpoints, source: string): Array<EndpointUpdate> =>
  Object.entries(endpoints).map(([service, specs]) => ({ _tag: "Reset", service, endpoints: toEndpoints(service, specs, source) }))

/** The configuration's endpoints, reported once at start. */
export const configSource = (endpoints: StaticEndpoints): DiscoverySource => ({
  start(emit) {
    for (const update of resets(endpoints, "static")) emit(update)
    return () => {}
  }
})

export interface FileSourceOptions {
  /** A JSON file shaped like the configuration's `endpoints`. */
  readonly path: string
  /** How long to wait after a change for more changes before re-reading (default 50 ms). */
  readonly debounceMs?: number
  /** Receives "discovery.static-file-invalid", "-missing" and "-watch-failed" events; stderr by default. */
  readonly log?: Log
}

/**
 * The largest endpoints file read: 100 services of 1,000 endpoints each, with identities, come to
 * about 10 MiB of JSON. A bigger file is not an endpoints file; reading it would hold it all in memory.
 */
export const MaxEndpointsFileBytes = 16 * 1024 * 1024

/**
 * Reads and checks the file: its endpoints, or StaticFileInvalid. A symlink is followed (a
 * ConfigMap's file is one); what it leads to must be a regular file of at most MaxEndpointsFileBytes.
 */
export const readEndpointFile = (path: string): Result.Result<StaticEndpoints, StaticFileInvalid> => {
  let text: string
  try {
    const read = readSmallFile(path, MaxEndpointsFileBytes, { followSymlink: true })
    if ("problem" in read) return Result.fail(new StaticFileInvalid({ path, message: read.problem }))
    text = read.text
  } catch (error) {
    return Result.fail(new StaticFileInvalid({ path, message: messageOf(error) }))
  }
  return Result.mapError(decodeEndpointFile(text), (error) => new StaticFileInvalid({ path, message: error.message }))
}

const isMissing = (error: unknown): boolean => typeof error === "object" && error !== null && "code" in error && error.code === "ENOENT"

/**
 * The endpoints of a file, re-read when it changes. The directory is watched (so an editor's
 * rename-over, a file created later and a Kubernetes ConfigMap's symlink swap are all seen); each burst
 * of events is debounced, then the file's identity, size and mtime tell whether it really changed. A
 * file that does not parse keeps the last good set; a missing file means no endpoints.
 */
export const fileSource = (options: FileSourceOptions): DiscoverySource => ({
  start(emit) {
    const { path } = options
    const log = options.log ?? stderrLog
    let reported = new Set<string>()
    /** What the file looked like when it was last read, to skip events that did not change it. */
    let seen: string | undefined
    let timer: ReturnType<typeof setTimeout> | undefined

    const publish = (endpoints: StaticEndpoints) => {
      for (const service of reported) if (!Object.hasOwn(endpoints, service)) emit({ _tag: "Reset", service, endpoints: [] })
      for (const update of resets(endpoints, "static:file")) emit(update)
      reported = new Set(Object.keys(endpoints))
    }

    const load = () => {
      let signature: string
      try {
        const stat = statSync(path, { bigint: true })
        signature = `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeNs}`
      } catch (error) {
        if (!isMissing(error)) return log("discovery.static-file-invalid", { path, message: messageOf(error) })
        if (seen !== "missing") log("discovery.static-file-missing", { path })
        seen = "missing"
        return publish({})
      }
      if (signature === seen) return
      seen = signature
      const result = readEndpointFile(path)
      if (Result.isFailure(result)) return log("discovery.static-file-invalid", { path, message: result.failure.message })
      publish(result.success)
    }

    let watcher: FSWatcher | undefined
    try {
      watcher = watch(dirname(path), () => {
        clearTimeout(timer)
        timer = setTimeout(load, options.debounceMs ?? 50)
      })
      watcher.on("error", (error) => log("discovery.static-file-watch-failed", { path, message: messageOf(error) }))
    } catch (error) {
      log("discovery.static-file-watch-failed", { path, message: messageOf(error) })
    }
    load()
    return () => {
      clearTimeout(timer)
      watcher?.close()
    }
  }
})
