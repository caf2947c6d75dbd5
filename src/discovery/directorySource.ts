// Discovery on one machine without multicast: every sidecar writes one small JSON file about itself
// into a shared directory (its announcement) and reads the others' (the directory source). Stopping
// removes the file (the goodbye); a sidecar killed without one is dropped once its process is gone,
// checked on every rescan. This is what the demo uses, since mDNS must not multicast from the
// machine's own network namespace here.
import * as Data from "effect/Data"
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, watch, writeFileSync, type FSWatcher } from "node:fs"
import { join } from "node:path"
import { parseSpiffeId } from "../identity/spiffe.ts"
import { type Log, messageOf } from "../iip/log.ts"
import { type DiscoveredEndpoint, type DiscoverySource, endpointKey } from "./types.ts"

export class AnnouncementInvalid extends Data.TaggedError("AnnouncementInvalid")<{ readonly file: string; readonly message: string }> {}

export interface Announcement {
  readonly service: string
  readonly host: string
  readonly port: number
  readonly weight: number
  readonly node: string
  readonly mesh: string
  readonly pid: number
  /** The SPIFFE ID the sidecar presents over mutual TLS (absent without credentials). */
  readonly identity?: string
}

export interface DirectorySourceOptions {
  readonly directory: string
  readonly mesh: string
  /** This sidecar, if it serves: written as `<node>.json`, removed on stop. */
  readonly announce?: Omit<Announcement, "mesh" | "pid">
  /** How often the directory is read again even without a change event (liveness of pids). */
  readonly rescanMs?: number
  readonly log: Log
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

const parse = (file: string, text: string): Announcement => {
  const value = JSON.parse(text) as Partial<Announcement>
  const ok = typeof value.service === "string" && typeof value.host === "string" && Number.isInteger(value.port) &&
    Number.isInteger(value.weight) && typeof value.node === "string" && typeof value.mesh === "string" && Number.isInteger(value.pid)
  if (!ok) throw new AnnouncementInvalid({ file, message: "expected service, host, port, weight, node, mesh and pid" })
  if (value.identity !== undefined && (typeof value.identity !== "string" || parseSpiffeId(value.identity) === undefined)) {
    throw new AnnouncementInvalid({ file, message: "identity is not a SPIFFE ID" })
  }
  return value as Announcement
}

export const directorySource = (options: DirectorySourceOptions): DiscoverySource => ({
  start(emit) {
    const { directory, mesh, log } = options
    mkdirSync(directory, { recursive: true })
    const own = options.announce === undefined ? undefined : join(directory, `${options.announce.node}.json`)
    if (own !== undefined) {
      // Written whole under another name, then renamed: a reader never sees half a file.
      writeFileSync(`${own}.tmp`, JSON.stringify({ ...options.announce, mesh, pid: process.pid }))
      renameSync(`${own}.tmp`, own)
    }
    /** Per service, what was last reported: its endpoints' keys and weights. */
    let reported = new Map<string, string>()
    const signature = (endpoints: ReadonlyArray<DiscoveredEndpoint>) => endpoints.map((e) => `${endpointKey(e)}#${e.weight}#${e.identity ?? ""}`).sort().join()
    const scan = () => {
      const found = new Map<string, Array<DiscoveredEndpoint>>()
      for (const name of readdirSync(directory)) {
        const file = join(directory, name)
        if (!name.endsWith(".json") || file === own) continue
        let announcement: Announcement
        try {
          announcement = parse(file, readFileSync(file, "utf8"))
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== "ENOENT") log("discovery.announcement-invalid", { file, message: messageOf(error) })
          continue
        }
        if (announcement.mesh !== mesh || !alive(announcement.pid)) continue
        const { service, host, port, weight, node, identity } = announcement
        const list = found.get(service) ?? []
        list.push({ service, host, port, weight: Math.max(1, weight), node, features: [], source: "local", ...(identity === undefined ? {} : { identity }) })
        found.set(service, list)
      }
      const now = new Map<string, string>()
      for (const service of new Set([...reported.keys(), ...found.keys()])) {
        const endpoints = found.get(service) ?? []
        const current = signature(endpoints)
        if (endpoints.length > 0) now.set(service, current)
        if (reported.get(service) !== current && (endpoints.length > 0 || reported.has(service))) emit({ _tag: "Reset", service, endpoints })
      }
      reported = now
    }
    let watcher: FSWatcher | undefined
    try {
      watcher = watch(directory, () => scan())
    } catch (error) {
      log("discovery.directory-watch-failed", { directory, message: messageOf(error) })
    }
    const timer = setInterval(scan, options.rescanMs ?? 1000)
    scan()
    return () => {
      clearInterval(timer)
      watcher?.close()
      if (own !== undefined) rmSync(own, { force: true })
    }
  }
})
