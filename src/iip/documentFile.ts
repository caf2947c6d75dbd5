// A configuration document kept in a file and kept current (the authorization policy,
// src/identity/policyFile.ts; the routes, src/sidecar/routesFile.ts): JSON, or YAML for a name
// ending in .yaml/.yml (yamlStrict.ts, with the `yaml` parser, is loaded only then). Re-read when it changes: its
// directory is watched (an editor's rename-over and a Kubernetes ConfigMap's symlink swap are both
// seen), and a bounded poll stats it in case the watch misses an event (network file systems, some
// container runtimes). A change seen is logged once a check (`<event>-changed`, so the operator
// sees it noticed): a file changing without pause logs one each 8 looks of 250 ms, beside its
// `still-changing`, measured 3 in 6 s of a write every 10 ms. A version is taken only once it is
// stable: its identity, size and mtime the same for a settle time (250 ms) and across the read.
// A writer that is still at it (an editor saving in place, `cat > file`) may have left a prefix
// that is itself valid YAML with fewer rules, a policy that allows more than meant; so a version
// still changing is skipped and looked at again, a few times, then left to the next check
// (`<event>-still-changing`), the last good one kept; a version taken after such skips says how
// many in its log line (`skipped`).
// A version that cannot be read or checked keeps the last good one in force,
// says why in the log (`<event>-invalid`) and is counted (`onLoad("invalid")`); at start there is
// no last good one, so the caller gets the failure, as for a file still changing after those looks.
import * as Result from "effect/Result"
import { constants, type FSWatcher, watch } from "node:fs"
import { open, stat } from "node:fs/promises"
import { dirname } from "node:path"
import { parseJsonStrict } from "./jsonStrict.ts"
import { type Log, messageOf } from "./log.ts"
import { loggable } from "./redact.ts"

export type DocumentLoad = "ok" | "invalid"

/** What one read of the file asks for at most. */
const readBlockBytes = 64 * 1024

const isYaml = (path: string): boolean => /\.ya?ml$/i.test(path)

/**
 * The file's content parsed as JSON or YAML (not checked further), or why not: a message for the
 * caller's own tagged error. A file over `maxBytes` is refused unread; `kind` names it in that message.
 */
export const readDocumentFile = async (path: string, maxBytes: number, kind: string): Promise<Result.Result<unknown, string>> => {
  let text: string
  try {
    // One descriptor for the checks and the read, so what is read is what was checked (a file
    // swapped after a stat by name is not); O_NONBLOCK, so a FIFO put there does not hang the open.
    const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK)
    try {
      const info = await handle.stat()
      if (!info.isFile()) return Result.fail("not a regular file")
      if (info.size > maxBytes) return Result.fail(`${info.size} bytes, more than the ${maxBytes} a ${kind} may hold`)
      // Read to one byte past the limit, whatever the size said (a file still growing, /proc).
      const parts: Array<Buffer> = []
      let total = 0
      for (;;) {
        const part = Buffer.allocUnsafe(Math.min(readBlockBytes, maxBytes + 1 - total))
        const { bytesRead } = await handle.read(part, 0, part.length, total)
        if (bytesRead === 0) break
        parts.push(part.subarray(0, bytesRead))
        total += bytesRead
        if (total > maxBytes) return Result.fail(`more than the ${maxBytes} bytes a ${kind} may hold (read, though its size said ${info.size})`)
      }
      text = Buffer.concat(parts, total).toString("utf8")
    } finally {
      await handle.close()
    }
  } catch (error) {
    return Result.fail(messageOf(error))
  }
  try {
    if (!isYaml(path)) return Result.succeed(parseJsonStrict(text))
    const { parseYamlStrict } = await import("./yamlStrict.ts")
    return Result.succeed(parseYamlStrict(text, kind))
  } catch (error) {
    return Result.fail(`cannot parse it as ${isYaml(path) ? "YAML" : "JSON"}: ${messageOf(error)}`)
  }
}

export interface DocumentWatchOptions<T, E extends { readonly message: string }> {
  readonly path: string
  /** Reads and checks the file (readDocumentFile, then the caller's checks). */
  readonly read: () => Promise<Result.Result<T, E>>
  /** What is in force, for the log (`applies` of the loaded event, `keeping` of the invalid one). */
  readonly describe: (value: T) => string
  /** The caller's error for a file still changing at start (no version to take), from `message`. */
  readonly unsettled: (message: string) => E
  /** The log events' prefix: `<event>-loaded`, `<event>-changed`, `<event>-invalid`, `<event>-still-changing`, `<event>-watch-failed`. */
  readonly event: string
  /** More fields of the loaded event. */
  readonly loadedFields?: Readonly<Record<string, string>>
  /** The file is stat'ed this often besides the watch. */
  readonly pollMs: number
  readonly log: Log
  /** Told of every load after the first (a reload), good or bad. */
  readonly onLoad?: (result: DocumentLoad) => void
  /** How long a burst of watch events is let settle before the file is read (default 50 ms). */
  readonly debounceMs?: number
  /** How long a changed version must stay unchanged before it is read (default settleMsDefault). */
  readonly settleMs?: number
  /** False: the poll alone (a file system where watching sees nothing); default true. */
  readonly watch?: boolean
}

/**
 * A writer's pause between two writes (an editor's buffered save, a script's lines) is a few ms;
 * 250 ms is past them while a reload still lands well under a second after the save.
 */
export const settleMsDefault = 250

/**
 * How many times one check looks at a version that keeps changing before it leaves it to the next
 * check (the watch's next event or the poll): a file written without pause for longer is not read
 * in a loop, and the check ends (what is in force stays).
 */
export const settleTries = 8

/** The value in force and the watch that keeps it current. */
export interface DocumentWatch<T> {
  readonly current: () => T
  /** Reads the file now if it changed (what the watch and the poll call). */
  readonly check: () => Promise<void>
  readonly close: () => void
}

/** What the file looks like (a change of any part means it is read again), and its mtime in wall ms (NaN: not stat'ed). */
const versionOf = async (path: string): Promise<{ readonly signature: string; readonly mtimeMs: number }> => {
  try {
    const info = await stat(path, { bigint: true })
    return { signature: `${info.dev}:${info.ino}:${info.size}:${info.mtimeNs}`, mtimeMs: Number(info.mtimeNs / 1_000_000n) }
  } catch (error) {
    return { signature: `error:${(error as NodeJS.ErrnoException).code ?? "unknown"}`, mtimeMs: Number.NaN }
  }
}

const signatureOf = async (path: string): Promise<string> => (await versionOf(path)).signature

/** Loads the file (failing when `read` fails) and keeps its value current until `close`. */
export const watchDocumentFile = async <T, E extends { readonly message: string }>(
  options: DocumentWatchOptions<T, E>
): Promise<Result.Result<DocumentWatch<T>, E>> => {
  const { path, log, event, describe } = options
  const loadedFields = options.loadedFields ?? {}
  const settleMs = Math.max(0, options.settleMs ?? settleMsDefault)
  /** Resolved by close, so a check waiting out a settle time ends at once. */
  let wake: (() => void) | undefined
  /** At start the caller awaits the value, so the timer holds the process; a reload's does not. */
  const settle = (holdsProcess = false) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, settleMs)
      if (!holdsProcess) timer.unref()
      wake = () => {
        clearTimeout(timer)
        resolve()
      }
    })

  // The first value, as a reload takes one, except that a file whose mtime is older than the
  // settle time is read at once (a start waits only for a file being written, seen by its mtime:
  // wall time, as the file system keeps it). One still changing after settleTries looks fails the
  // start: what was read may be a part (a policy allowing more) and there is no last good one.
  let seen = ""
  let first: Result.Result<T, E> | undefined
  let skipped = 0
  while (first === undefined) {
    const before = await versionOf(path)
    if (before.mtimeMs > Date.now() - settleMs) await settle(true)
    const read = await options.read()
    seen = before.signature
    if ((await signatureOf(path)) === before.signature) first = read
    else if (++skipped === settleTries) {
      log(`${event}-still-changing`, { path: loggable(path), tries: String(settleTries), settleMs: String(settleMs), keeping: "nothing: not started" })
      return Result.fail(options.unsettled(`still changing after ${settleTries} looks ${settleMs} ms apart (a writer still at it?): not started on a part of it`))
    }
  }
  if (Result.isFailure(first)) return Result.fail(first.failure)
  let value = first.success
  log(`${event}-loaded`, { path: loggable(path), ...(skipped === 0 ? {} : { skipped: String(skipped) }), ...loadedFields, applies: describe(value) })
  let closed = false
  /** One check at a time; a change seen meanwhile runs one more after it. */
  let running: Promise<void> | undefined
  let again = false

  const load = async (): Promise<void> => {
    let skipped = 0
    for (let tries = 0; tries < settleTries; tries++) {
      const signature = await signatureOf(path)
      if (signature === seen || closed) return
      // Once a check: the operator sees the change was noticed, and when it will apply at the soonest.
      if (tries === 0) log(`${event}-changed`, { path: loggable(path), settleMs: String(settleMs) })
      // Unchanged for the settle time, then across the read: a writer that paused for less than
      // that (its first part may be a valid document with fewer entries) has written again by now.
      await settle()
      if (closed) return
      if ((await signatureOf(path)) !== signature) {
        skipped++
        continue
      }
      const next = await options.read()
      if (closed) return
      if ((await signatureOf(path)) !== signature) {
        skipped++
        continue
      }
      seen = signature
      const fields = { path: loggable(path), ...(skipped === 0 ? {} : { skipped: String(skipped) }) }
      if (Result.isFailure(next)) {
        log(`${event}-invalid`, { ...fields, message: loggable(next.failure.message, 1000), keeping: describe(value) })
        options.onLoad?.("invalid")
        return
      }
      value = next.success
      log(`${event}-loaded`, { ...fields, ...loadedFields, applies: describe(value) })
      options.onLoad?.("ok")
      return
    }
    // Not marked seen: the next check (the watch's next event, the poll) looks at it again.
    log(`${event}-still-changing`, { path: loggable(path), tries: String(settleTries), settleMs: String(settleMs), keeping: describe(value) })
  }
  const check = (): Promise<void> => {
    if (running !== undefined) {
      again = true
      return running
    }
    running = load()
      .catch((error: unknown) => log(`${event}-invalid`, { path: loggable(path), message: loggable(messageOf(error)), keeping: describe(value) }))
      .finally(() => {
        running = undefined
        if (again && !closed) {
          again = false
          void check()
        }
      })
    return running
  }

  let timer: ReturnType<typeof setTimeout> | undefined
  let watcher: FSWatcher | undefined
  if (options.watch !== false) {
    try {
      watcher = watch(dirname(path), () => {
        clearTimeout(timer)
        timer = setTimeout(() => void check(), options.debounceMs ?? 50)
      })
      watcher.on("error", (error) => log(`${event}-watch-failed`, { path: loggable(path), message: loggable(messageOf(error)) }))
    } catch (error) {
      log(`${event}-watch-failed`, { path: loggable(path), message: loggable(messageOf(error)) })
    }
  }
  const poll = setInterval(() => void check(), options.pollMs)
  poll.unref()
  return Result.succeed({
    current: () => value,
    check,
    close: () => {
      closed = true
      wake?.()
      clearTimeout(timer)
      clearInterval(poll)
      watcher?.close()
    }
  })
}
