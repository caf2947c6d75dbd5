// Discovery on one machine without multicast: every sidecar writes one small JSON file about itself
// into a shared directory (its announcement) and reads the others' (the directory source). Stopping
// removes the file (the goodbye); a sidecar killed without one is dropped once its process is gone,
// checked on every rescan. This is what the demo uses, since mDNS must not multicast from the
// machine's own network namespace here.
//
// The directory is shared with every process on the machine, so its files are hostile until checked:
// a file is read only when it is a regular file (not followed through a symlink, so no other file's
// content reaches the log; no FIFO or device, whose open or read would block or never end) of at
// most MaxAnnouncementBytes, and each field is checked. A bad file is logged once per version of it
// and skipped; the others are kept. A directory that cannot be read keeps the last set.
import * as Data from "effect/Data"
import { mkdirSync, readdirSync, renameSync, rmSync, watch, writeFileSync, type FSWatcher } from "node:fs"
import { join } from "node:path"
import { isSubsetLabel } from "../balancer/subsets.ts"
import { parseSpiffeId } from "../identity/spiffe.ts"
import { type Log, messageOf } from "../iip/log.ts"
import { readSmallFile } from "../iip/smallFile.ts"
import { type DiscoveredEndpoint, type DiscoverySource, endpointKey, isHost, isNodeId, isServiceName, MaxWeight, validPort } from "./types.ts"

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
  /** The port of the sidecar's admin control listener on `host` (admin federation). */
  readonly adminPort?: number
  /** The app's version: its subset label. */
  readonly version?: string
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

/** How long after a change event the directory is read: the events of one burst of writes make one scan. */
const ScanDebounceMs = 20

/**
 * The most announcement files read per scan (the first by name); the rest are left out and logged.
 * Every scan reads each file, so a directory another process filled with 100,000 of them would cost
 * that many opens every second; 4096 is far beyond the sidecars one machine runs.
 */
export const MaxAnnouncementFiles = 4096

/** An announcement is about 300 bytes; a file of more than this is not one, and is not read. */
export const MaxAnnouncementBytes = 64 * 1024

const invalid = (file: string, message: string) => new AnnouncementInvalid({ file, message })

const parse = (file: string, text: string): Announcement => {
  const value = JSON.parse(text) as Partial<Announcement> | null
  if (typeof value !== "object" || value === null) throw invalid(file, "expected an object")
  const ok = typeof value.service === "string" && typeof value.host === "string" && Number.isInteger(value.port) &&
    Number.isInteger(value.weight) && typeof value.node === "string" && typeof value.mesh === "string" && Number.isInteger(value.pid)
  if (!ok) throw invalid(file, "expected service, host, port, weight, node, mesh and pid")
  if (!isServiceName(value.service!)) throw invalid(file, "service is not a DNS label")
  if (!isHost(value.host!)) throw invalid(file, "host is not an IP address or host name")
  if (validPort(value.port) === undefined) throw invalid(file, "port is not 1..65535")
  if (value.weight! < 1 || value.weight! > MaxWeight) throw invalid(file, `weight is not 1..${MaxWeight}`)
  if (!isNodeId(value.node!)) throw invalid(file, "node is not 1-253 characters without control characters")
  // kill(0) and kill(-1) reach a process group or every process: such a pid would never look dead.
  if (value.pid! <= 0) throw invalid(file, "pid is not a process id")
  if (value.identity !== undefined && (typeof value.identity !== "string" || parseSpiffeId(value.identity) === undefined)) {
    throw invalid(file, "identity is not a SPIFFE ID")
  }
  if (value.adminPort !== undefined && validPort(value.adminPort) === undefined) throw invalid(file, "adminPort is not a port")
  if (value.version !== undefined && (typeof value.version !== "string" || !isSubsetLabel(value.version))) throw invalid(file, "version is not a version label")
  return value as Announcement
}

export const directorySource = (options: DirectorySourceOptions): DiscoverySource => ({
  start(emit) {
    const { directory, mesh, log } = options
    mkdirSync(directory, { recursive: true })
    const own = options.announce === undefined ? undefined : join(directory, `${options.announce.node}.json`)
    if (own !== undefined) {
      // Written whole under another name, then renamed: a reader never sees half a file. Created
      // anew (O_EXCL): a symlink another process put at that name is not written through.
      const temporary = `${own}.tmp`
      rmSync(temporary, { force: true })
      writeFileSync(temporary, JSON.stringify({ ...options.announce, mesh, pid: process.pid }), { flag: "wx" })
      renameSync(temporary, own)
    }
    /** Per service, what was last reported: its endpoints' keys and weights. */
    let reported = new Map<string, string>()
    /** The invalid files of the last scan and which version of each was logged: each is logged once per version. */
    let invalidLogged = new Map<string, string>()
    /** Whether the last scan left files out (logged once until it does not). */
    let capped = false
    /** The last error reading the directory, logged once until a read succeeds. */
    let unreadable: string | undefined
    const signature = (endpoints: ReadonlyArray<DiscoveredEndpoint>) => endpoints.map((e) => `${endpointKey(e)}#${e.weight}#${e.identity ?? ""}#${e.adminPort ?? ""}#${e.version ?? ""}`).sort().join()
    const scan = () => {
      let names: Array<string>
      try {
        names = readdirSync(directory)
      } catch (error) {
        // Removed or made unreadable by another process: the last set stays until it can be read.
        const message = messageOf(error)
        if (message !== unreadable) log("discovery.directory-unreadable", { directory, message })
        unreadable = message
        return
      }
      unreadable = undefined
      let announcements = names.filter((name) => name.endsWith(".json") && join(directory, name) !== own)
      const over = announcements.length > MaxAnnouncementFiles
      if (over && !capped) log("discovery.directory-capped", { directory, files: announcements.length, limit: MaxAnnouncementFiles })
      capped = over
      if (over) announcements = announcements.sort().slice(0, MaxAnnouncementFiles)
      const found = new Map<string, Array<DiscoveredEndpoint>>()
      const invalidNow = new Map<string, string>()
      for (const name of announcements) {
        const file = join(directory, name)
        let announcement: Announcement
        let version = ""
        try {
          const read = readSmallFile(file, MaxAnnouncementBytes, { followSymlink: false })
          version = read.version
          if ("problem" in read) throw new AnnouncementInvalid({ file, message: read.problem })
          announcement = parse(file, read.text)
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === "ENOENT") continue
          invalidNow.set(file, version)
          if (invalidLogged.get(file) !== version) log("discovery.announcement-invalid", { file, message: messageOf(error) })
          continue
        }
        if (announcement.mesh !== mesh || !alive(announcement.pid)) continue
        const { service, host, port, weight, node, identity, adminPort, version: appVersion } = announcement
        const list = found.get(service) ?? []
        list.push({
          service, host, port, weight, node, features: [], source: "local",
          ...(identity === undefined ? {} : { identity }),
          ...(adminPort === undefined ? {} : { adminPort }),
          ...(appVersion === undefined ? {} : { version: appVersion })
        })
        found.set(service, list)
      }
      invalidLogged = invalidNow
      const now = new Map<string, string>()
      for (const service of new Set([...reported.keys(), ...found.keys()])) {
        const endpoints = found.get(service) ?? []
        const current = signature(endpoints)
        if (endpoints.length > 0) now.set(service, current)
        if (reported.get(service) !== current && (endpoints.length > 0 || reported.has(service))) emit({ _tag: "Reset", service, endpoints })
      }
      reported = now
    }
    // A burst of changes (another process writing many files) is one scan, not one per event.
    let pending: ReturnType<typeof setTimeout> | undefined
    const scanSoon = () => {
      if (pending === undefined) pending = setTimeout(() => {
        pending = undefined
        scan()
      }, ScanDebounceMs)
    }
    let watcher: FSWatcher | undefined
    try {
      watcher = watch(directory, scanSoon)
      // Without a listener an error (the directory removed, on some systems) would be thrown.
      watcher.on("error", (error) => log("discovery.directory-watch-failed", { directory, message: messageOf(error) }))
    } catch (error) {
      log("discovery.directory-watch-failed", { directory, message: messageOf(error) })
    }
    const timer = setInterval(scan, options.rescanMs ?? 1000)
    scan()
    return () => {
      clearInterval(timer)
      clearTimeout(pending)
      watcher?.close()
      if (own === undefined) return
      try {
        rmSync(own, { force: true })
      } catch (error) {
        // Replaced by something else (a directory) by another process: the stop goes on.
        log("discovery.announcement-remove-failed", { file: own, message: messageOf(error) })
      }
    }
  }
})
