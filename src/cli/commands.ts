// The tool commands of `iip-mesh` (echo-server, call, http-adapter, the file transfer:
// file-server, download, upload, the mesh identities: ca, identity, and the traffic views: stat,
// top, tap), parsed with effect/cli.
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Runtime from "effect/Runtime"
import { Argument, Command, Flag } from "effect/cli"
import { download } from "../files/download.ts"
import { ProgressMeter, resultLine } from "../files/progress.ts"
import { defaultMaxEntries, defaultMaxFileBytes, defaultQuotaBytes, openRoot, serveFiles } from "../files/server.ts"
import type { ChecksumMismatch, TransferFailed, TransferResult } from "../files/transfer.ts"
import { defaultMaxUnfinishedUploads, defaultPartialIdleMs, defaultPartialMaxAgeMs } from "../files/unfinished.ts"
import { upload } from "../files/upload.ts"
import * as Server from "../iip/server.ts"
import { messageOf } from "../iip/log.ts"
import { OptionInvalid } from "../iip/optionLimits.ts"
import { parseDuration, parseHostPort, parseSize, parseTimeoutFlag, parseWith } from "./args.ts"
import { ca } from "./ca.ts"
import { call } from "./call.ts"
import { echoServer } from "./echoServer.ts"
import { httpAdapter } from "./httpAdapter.ts"
import { identityIssuer } from "./identityIssuer.ts"
import { stat, tap, top } from "./meshStats.ts"

/** A command's failure: one line on stderr, exit code 1. */
const failLine = (command: string) => (error: unknown) =>
  Effect.sync(() => {
    process.stderr.write(`iip-mesh ${command}: ${messageOf(error)}\n`)
    process.exitCode = 1
  })

/**
 * serveFiles' options (as OptionInvalid names them) and the flags that set them: the two integer
 * flags, which reach its check as typed (the sizes and the age are bounded by their parsers first).
 */
const fileServerFlags: Readonly<Record<string, string>> = {
  "file server maxEntries": "--max-entries",
  "file server maxUnfinishedUploads": "--max-unfinished"
}

/** A library option's refusal as the flag the user typed: the option's name in it replaced by the flag's. */
const asFlag = (error: OptionInvalid, flags: Readonly<Record<string, string>>): OptionInvalid => {
  const flag = flags[error.option]
  return flag === undefined ? error : new OptionInvalid({ option: flag, value: error.value, message: error.message.replace(error.option, flag) })
}

const fileServer = Command.make(
  "file-server",
  {
    root: Flag.String("root").pipe(Flag.withDescription("directory served; no path may leave it")),
    listen: Flag.String("listen").pipe(Flag.withDescription("HOST:PORT; port 0 picks a free port"), Flag.withDefault("127.0.0.1:9091")),
    maxFileSize: Flag.String("max-file-size").pipe(
      Flag.withDescription("largest file an upload may grow to, e.g. 4GiB, 512MiB or bytes"),
      Flag.withDefault(`${defaultMaxFileBytes / 2 ** 30}GiB`)
    ),
    quota: Flag.String("quota").pipe(
      Flag.withDescription("most bytes the root may hold, unfinished uploads included (measured at start)"),
      Flag.withDefault(`${defaultQuotaBytes / 2 ** 30}GiB`)
    ),
    maxEntries: Flag.Int("max-entries").pipe(
      Flag.withDescription("most files and directories the root may hold, unfinished uploads included (counted at start)"),
      Flag.withDefault(defaultMaxEntries)
    ),
    partialMaxAge: Flag.String("partial-max-age").pipe(
      Flag.withDescription("an unfinished upload not written for this long is removed, e.g. 24h, 90m (0: never)"),
      Flag.withDefault(`${defaultPartialMaxAgeMs / 3_600_000}h`)
    ),
    partialIdle: Flag.String("partial-idle").pipe(
      Flag.withDescription("an unfinished upload not written for this long is removed when an upload needs its room, e.g. 10m (0: never)"),
      Flag.withDefault(`${defaultPartialIdleMs / 60_000}m`)
    ),
    maxUnfinished: Flag.Int("max-unfinished").pipe(
      Flag.withDescription("most unfinished uploads at once, those found at start included; a new one past it is refused"),
      Flag.withDefault(defaultMaxUnfinishedUploads)
    )
  },
  (input) =>
    Effect.gen(function*() {
      const { host, port } = yield* parseWith(() => parseHostPort(input.listen))
      const maxFileBytes = yield* parseWith(() => parseSize(input.maxFileSize))
      const quotaBytes = yield* parseWith(() => parseSize(input.quota))
      const partialMaxAgeMs = yield* parseWith(() => parseDuration(input.partialMaxAge))
      const partialIdleMs = yield* parseWith(() => parseDuration(input.partialIdle))
      const root = yield* Effect.tryPromise({ try: () => openRoot(input.root), catch: (error) => error })
      const server = yield* Server.make({ host, port, mesh: false })
      // A flag out of range (OptionInvalid) is a line on stderr, as a flag that does not parse, naming the flag.
      yield* Effect.try({
        try: () => serveFiles(server, root, { maxFileBytes, quotaBytes, maxEntries: input.maxEntries, partialMaxAgeMs, partialIdleMs, maxUnfinishedUploads: input.maxUnfinished }),
        catch: (error) => error instanceof OptionInvalid ? asFlag(error, fileServerFlags) : error
      })
      yield* Console.log(`iip-mesh file-server listening on ${server.address.host}:${server.address.port}, root ${root}`)
      return yield* Effect.never
    }).pipe(Effect.scoped, Effect.catch(failLine("file-server")))
).pipe(Command.withDescription("Serve /download_file, /upload_file and /file_checksum from a directory (plain IIP, as the Go examples)"))

const server = Argument.String("server").pipe(Argument.withDescription("HOST:PORT of the file server"))
const timeout = Flag.String("timeout").pipe(Flag.withDescription("how long each request may take"), Flag.withDefault("30s"))

/** Runs a transfer with a progress line on a terminal and prints its result line on stdout. */
const transfer = (
  command: "download" | "upload",
  input: { readonly server: string; readonly timeout: string; readonly from: string; readonly to: string },
  run: (options: { host: string; port: number; timeoutMs: number; onProgress: ProgressMeter["update"] }) => Effect.Effect<TransferResult, TransferFailed | ChecksumMismatch>
) =>
  Effect.gen(function*() {
    const { host, port } = yield* parseWith(() => parseHostPort(input.server))
    const timeoutMs = yield* parseWith(() => parseTimeoutFlag("timeout", input.timeout, 0))
    const meter = new ProgressMeter(process.stderr)
    const result = yield* run({ host, port, timeoutMs, onProgress: meter.update }).pipe(Effect.ensuring(Effect.sync(() => meter.finish())))
    yield* Console.log(resultLine(command === "download" ? "downloaded" : "uploaded", input.from, input.to, result))
  }).pipe(Effect.catch(failLine(command)))

const downloadCommand = Command.make(
  "download",
  {
    server,
    remotePath: Argument.String("remote-path").pipe(Argument.withDescription("path on the server, relative to its root")),
    localPath: Argument.String("local-path").pipe(Argument.withDescription("where the file goes; <local-path>.iip-part until it is whole")),
    timeout
  },
  (input) =>
    transfer("download", { ...input, from: input.remotePath, to: input.localPath }, (options) =>
      download({ ...options, remotePath: input.remotePath, localPath: input.localPath }))
).pipe(Command.withDescription("Download a file, resuming from <local-path>.iip-part, checked by SHA-256 when the server can"))

const uploadCommand = Command.make(
  "upload",
  {
    server,
    localPath: Argument.String("local-path").pipe(Argument.withDescription("the file to send")),
    remotePath: Argument.String("remote-path").pipe(Argument.withDescription("path on the server, relative to its root")),
    timeout
  },
  (input) =>
    transfer("upload", { ...input, from: input.localPath, to: input.remotePath }, (options) =>
      upload({ ...options, localPath: input.localPath, remotePath: input.remotePath }))
).pipe(Command.withDescription("Upload a file, resuming the server's unfinished copy, checked by SHA-256 when the server can"))

const root = Command.make("iip-mesh").pipe(
  Command.withDescription("IIP library tools and the iip-mesh sidecar (iip-mesh sidecar --help, iip-mesh demo)"),
  Command.withSubcommands([echoServer, call, httpAdapter, fileServer, downloadCommand, uploadCommand, ca, identityIssuer, stat, top, tap])
)

/** A server stopped by SIGTERM or SIGINT has drained in its finalizers: that is a clean exit. */
const teardown: Runtime.Teardown = (exit, onExit) =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)

export const runCommands = (): void =>
  Command.run(root, { version: "0.1.0" }).pipe(Effect.provide(NodeServices.layer), NodeRuntime.runMain({ teardown }))
