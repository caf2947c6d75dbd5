// The authorization policy from a file (`--authz-policy`): JSON, or YAML for a name ending in
// .yaml/.yml, checked and compiled by policy.ts for this sidecar's service, and kept current by
// src/iip/documentFile.ts (watch and poll). A file that cannot be read or is not a policy keeps the
// last good policy in force, says why in the log (`authz-policy-invalid`) and is counted
// (`onLoad("invalid")`); at start there is no last good one, so the start fails.
import * as Data from "effect/Data"
import * as Result from "effect/Result"
import { type DocumentLoad, type DocumentWatch, readDocumentFile, watchDocumentFile } from "../iip/documentFile.ts"
import type { Log } from "../iip/log.ts"
import { type CompiledPolicy, compilePolicy, parsePolicyDocument } from "./policy.ts"

/** A policy file larger than this is refused unread. */
export const MAX_POLICY_FILE_BYTES = 1024 * 1024

export class PolicyFileInvalid extends Data.TaggedError("PolicyFileInvalid")<{ readonly path: string; readonly message: string }> {}

export type PolicyLoad = DocumentLoad

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

/** Reads, parses, checks and compiles the file: the policy for `service`, or why not. */
export const readPolicyFile = async (path: string, service: string, trustDomain: string): Promise<Result.Result<CompiledPolicy, PolicyFileInvalid>> => {
  const parsed = await readDocumentFile(path, MAX_POLICY_FILE_BYTES, "policy file")
  if (Result.isFailure(parsed)) return Result.fail(new PolicyFileInvalid({ path, message: parsed.failure }))
  const document = parsePolicyDocument(parsed.success)
  if (Result.isFailure(document)) return Result.fail(new PolicyFileInvalid({ path, message: document.failure.message }))
  return Result.succeed(compilePolicy(document.success, service, trustDomain))
}

/** The policy in force and the watch that keeps it current. */
export type PolicyWatch = DocumentWatch<CompiledPolicy>

/** Loads the file (failing when it is not a policy) and keeps its policy current until `close`. */
export const watchPolicyFile = (options: PolicyFileOptions): Promise<Result.Result<PolicyWatch, PolicyFileInvalid>> =>
  watchDocumentFile({
    path: options.path,
    read: () => readPolicyFile(options.path, options.service, options.trustDomain),
    describe: (policy) => policy.source,
    unsettled: (message) => new PolicyFileInvalid({ path: options.path, message }),
    event: "authz-policy",
    loadedFields: { service: options.service },
    pollMs: options.pollMs,
    log: options.log,
    ...(options.onLoad === undefined ? {} : { onLoad: options.onLoad }),
    ...(options.debounceMs === undefined ? {} : { debounceMs: options.debounceMs }),
    ...(options.watch === undefined ? {} : { watch: options.watch })
  })
