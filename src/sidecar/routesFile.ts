// The routes from a file (`--routes`): JSON, or YAML for a name ending in .yaml/.yml, checked and
// compiled by routes.ts, and kept current by src/iip/documentFile.ts (watch and poll), as the
// authorization policy file is. A file that cannot be read or is not a routes document keeps the
// last good routes in force, says why in the log (`routes-invalid`, each problem naming the route
// and the field); at start there is no last good one, so the
// start fails.
import * as Data from "effect/Data"
import * as Result from "effect/Result"
import { type DocumentWatch, readDocumentFile, watchDocumentFile } from "../iip/documentFile.ts"
import type { Log } from "../iip/log.ts"
import { type CompiledRoutes, type CompileOptions, compileRoutes, parseRoutesDocument } from "./routes.ts"

/** A routes file larger than this is refused unread. */
export const MAX_ROUTES_FILE_BYTES = 1024 * 1024

export class RoutesFileInvalid extends Data.TaggedError("RoutesFileInvalid")<{ readonly path: string; readonly message: string }> {}

export interface RoutesFileOptions {
  readonly path: string
  /** The file is stat'ed this often besides the watch. */
  readonly pollMs: number
  /** "routes-loaded" and "routes-invalid" events. */
  readonly log: Log
  /** How long a burst of watch events is let settle before the file is read (default 50 ms). */
  readonly debounceMs?: number
  /** How the routes are compiled (the rate limits' bucket bound). */
  readonly compile?: CompileOptions
  /** False: the poll alone (a file system where watching sees nothing); default true. */
  readonly watch?: boolean
}

/** Reads, parses, checks and compiles the file: its routes, or why not (naming the file). */
export const readRoutesFile = async (path: string, compile: CompileOptions = {}): Promise<Result.Result<CompiledRoutes, RoutesFileInvalid>> => {
  const parsed = await readDocumentFile(path, MAX_ROUTES_FILE_BYTES, "routes file")
  if (Result.isFailure(parsed)) return Result.fail(new RoutesFileInvalid({ path, message: `${path}: ${parsed.failure}` }))
  const document = parseRoutesDocument(parsed.success)
  if (Result.isFailure(document)) return Result.fail(new RoutesFileInvalid({ path, message: `${path}: ${document.failure.message}` }))
  return Result.succeed(compileRoutes(document.success, compile))
}

/** Loads the file (failing when it holds no valid routes) and keeps its routes current until `close`. */
export const watchRoutesFile = (options: RoutesFileOptions): Promise<Result.Result<DocumentWatch<CompiledRoutes>, RoutesFileInvalid>> =>
  watchDocumentFile({
    path: options.path,
    read: () => readRoutesFile(options.path, options.compile),
    describe: (routes) => routes.source,
    unsettled: (message) => new RoutesFileInvalid({ path: options.path, message: `${options.path}: ${message}` }),
    event: "routes",
    pollMs: options.pollMs,
    log: options.log,
    ...(options.debounceMs === undefined ? {} : { debounceMs: options.debounceMs }),
    ...(options.watch === undefined ? {} : { watch: options.watch })
  })
