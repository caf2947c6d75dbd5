// The authorization policy from a file (`--authz-policy`): JSON, or YAML for a name ending in
// .yaml/.yml (the `yaml` parser is loaded only then), checked and compiled by policy.ts for this
// sidecar's service. Re-read when it changes: its directory is watched (an editor's rename-over
// and a Kubernetes ConfigMap's symlink swap are both seen), and a bounded poll stats it in case
// the watch misses an event (network file systems, some container runtimes). A file that cannot
// be read or is not a policy keeps the last good policy in force, says why in the log and is
// counted (`onLoad("invalid")`); at start there is no last good one, so the start fails.
import * as Data from "effect/Data"
import * as Result from "effect/Result"
import { type FSWatcher, watch } from "node:fs"
import { readFile, stat } from "node:fs/promises"
import { dirname } from "node:path"
import { type Log, messageOf } from "../iip/log.ts"
import { loggable } from "../iip/redact.ts"
import { type CompiledPolicy, compilePolicy, parsePolicyDocument } from "./policy.ts"

/** A policy file larger than this is refused unread. */
export const MAX_POLICY_FILE_BYTES = 1024 * 1024

export class PolicyFileInvalid extends Data.TaggedError("PolicyFileInvalid")<{ readonly path: string; readonly message: string }> {}

export type PolicyLoad = "ok" | "invalid"

export interface PolicyFileOptions {
  readonly path: string
  /** This sidecar's service: the part of the document that applies. */
  readonly service: string
  /** What `mesh-authenticated` admits. */
  readonly trustDomain: string
  /** The file is stat'ed this often besides the watch. */
  readonly pollMs: number
  /** "authz-policy-loaded" and "authz-policy-invalid" events. */
  readonly log: Log
  /** Told of every load after the first (a reload), good or bad. */
  readonly onLoad?: (result: PolicyLoad) => void
  /** How long a burst of watch events is let settle before the file is read (default 50 ms). */
  readonly debounceMs?: number
  /** False: the poll alone (a file system where watching sees nothing); default true. */
  readonly watch?: boolean
}

const isYaml = (path: string): boolean => /\.ya?ml$/i.test(path)

/** Reads, parses, checks and compiles the file: the policy for `service`, or why not. */
export const readPolicyFile = async (path: string, service: string, trustDomain: string): Promise<Result.Result<CompiledPolicy, PolicyFileInvalid>> => {
  const fail = (message: string) => Result.fail(new PolicyFileInvalid({ path, message }))
  let text: string
  try {
    const info = await stat(path)
    if (!info.isFile()) return fail("not a regular file")
    if (info.size > MAX_POLICY_FILE_BYTES) return fail(`${info.size} bytes, more than the ${MAX_POLICY_FILE_BYTES} a policy file may hold`)
    text = await readFile(path, "utf8")
  } catch (error) {
    return fail(messageOf(error))
  }
  let parsed: unknown
  try {
    if (isYaml(path)) {
      const yaml = await import("yaml")
      parsed = yaml.parse(text, { maxAliasCount: 100, prettyErrors: false })
    } else {
      parsed = JSON.parse(text)
    }
  } catch (error) {
    return fail(`cannot parse it as ${isYaml(path) ? "YAML" : "JSON"}: ${messageOf(error)}`)
  }
  const document = parsePolicyDocument(parsed)
  if (Result.isFailure(document)) return fail(document.failure.message)
  return Result.succeed(compilePolicy(document.success, service, trustDomain))
}

/** The policy in force and the watch that keeps it current. */
export interface PolicyWatch {
  readonly current: () => CompiledPolicy
  /** Reads the file now if it changed (what the watch and the poll call). */
  readonly check: () => Promise<void>
  readonly close: () => void
}

/** What the file looked like when last read: a change of any part means it is read again. */
const signatureOf = async (path: string): Promise<string> => {
  try {
    const info = await stat(path, { bigint: true })
    return `${info.dev}:${info.ino}:${info.size}:${info.mtimeNs}`
  } catch (error) {
    return `error:${(error as NodeJS.ErrnoException).code ?? "unknown"}`
  }
}

/** Loads the file (failing when it is not a policy) and keeps its policy current until `close`. */
export const watchPolicyFile = async (options: PolicyFileOptions): Promise<Result.Result<PolicyWatch, PolicyFileInvalid>> => {
  const { path, service, trustDomain, log } = options
  let seen = await signatureOf(path)
  const first = await readPolicyFile(path, service, trustDomain)
  if (Result.isFailure(first)) return Result.fail(first.failure)
  let policy = first.success
  log("authz-policy-loaded", { path: loggable(path), service, applies: policy.source })
  let closed = false
  /** One check at a time; a change seen meanwhile runs one more after it. */
  let running: Promise<void> | undefined
  let again = false

  const load = async (): Promise<void> => {
    const signature = await signatureOf(path)
    if (signature === seen || closed) return
    seen = signature
    const next = await readPolicyFile(path, service, trustDomain)
    if (closed) return
    if (Result.isFailure(next)) {
      log("authz-policy-invalid", { path: loggable(path), message: loggable(next.failure.message, 1000), keeping: policy.source })
      options.onLoad?.("invalid")
      return
    }
    policy = next.success
    log("authz-policy-loaded", { path: loggable(path), service, applies: policy.source })
    options.onLoad?.("ok")
  }
  const check = (): Promise<void> => {
    if (running !== undefined) {
      again = true
      return running
    }
    running = load()
      .catch((error: unknown) => log("authz-policy-invalid", { path: loggable(path), message: loggable(messageOf(error)), keeping: policy.source }))
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
      watcher.on("error", (error) => log("authz-policy-watch-failed", { path: loggable(path), message: loggable(messageOf(error)) }))
    } catch (error) {
      log("authz-policy-watch-failed", { path: loggable(path), message: loggable(messageOf(error)) })
    }
  }
  const poll = setInterval(() => void check(), options.pollMs)
  poll.unref()
  return Result.succeed({
    current: () => policy,
    check,
    close: () => {
      closed = true
      clearTimeout(timer)
      clearInterval(poll)
      watcher?.close()
    }
  })
}
