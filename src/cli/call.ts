// `iip-mesh call HOST:PORT/path?query [--data TEXT | --data-file F] [--timeout 1s] [--tls |
// --tls-ca FILE]`: one request, like the reference's `iq`; over TLS in the reference's mode (the
// server's certificate not verified, or verified against --tls-ca). The answer goes to stdout as it came; a failure is one line on
// stderr and exit code 1.
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { Argument, Command, Flag } from "effect/cli"
import { readFile } from "node:fs/promises"
import { createSecureContext } from "node:tls"
import * as Client from "../iip/client.ts"
import { messageOf } from "../iip/log.ts"
import { ArgumentError, parseTarget, parseTimeoutFlag, parseWith } from "./args.ts"

const target = Argument.String("target").pipe(Argument.withDescription("HOST:PORT/path?query"))
const data = Flag.String("data").pipe(Flag.withDescription("request body (default {})"), Flag.optional)
const dataFile = Flag.String("data-file").pipe(Flag.withDescription("read the request body from this file"), Flag.optional)
const timeout = Flag.String("timeout").pipe(Flag.withDescription("how long to wait for the answer"), Flag.withDefault("1s"))
const tlsFlag = Flag.Boolean("tls").pipe(Flag.withDescription("connect over TLS without verifying the server (the reference's mode)"), Flag.withDefault(false))
const tlsCa = Flag.String("tls-ca").pipe(Flag.withDescription("connect over TLS, the server's certificate verified against this PEM CA"), Flag.optional)

/** The client's TLS options: none, the reference's unverified mode, or verified against a CA file. */
const clientTls = (plainTls: boolean, caFile: Option.Option<string>) =>
  Effect.gen(function*() {
    if (!plainTls && Option.isNone(caFile)) return {}
    const ca = Option.isNone(caFile)
      ? undefined
      : yield* Effect.tryPromise({ try: () => readFile(caFile.value, "utf8"), catch: (e) => new ArgumentError({ message: `cannot read --tls-ca: ${messageOf(e)}` }) })
    const context = createSecureContext({ minVersion: "TLSv1.2", ...(ca === undefined ? {} : { ca }) })
    return { tls: { secureContext: () => context, alpn: [], verifyChain: ca !== undefined } }
  })

const fail = (message: string) =>
  Effect.sync(() => {
    process.stderr.write(`iip-mesh call: ${message}\n`)
    process.exitCode = 1
  })

export const call = Command.make("call", { target, data, dataFile, timeout, tls: tlsFlag, tlsCa }, (input) =>
  Effect.gen(function*() {
    if (Option.isSome(input.data) && Option.isSome(input.dataFile)) {
      return yield* new ArgumentError({ message: "give --data or --data-file, not both" })
    }
    const { host, port, path } = yield* parseWith(() => parseTarget(input.target))
    // Both the connect and the request timeout: 0 would fail the dial at once.
    const timeoutMs = yield* parseWith(() => parseTimeoutFlag("timeout", input.timeout, 1))
    const file = input.dataFile
    const body = Option.isSome(file)
      ? yield* Effect.tryPromise({
        try: () => readFile(file.value),
        catch: (e) => new ArgumentError({ message: `cannot read --data-file: ${messageOf(e)}` })
      })
      : Option.getOrElse(input.data, () => "{}") // what iq sends without data
    const tls = yield* clientTls(input.tls, input.tlsCa)
    const client = yield* Client.make({ host, port, maxConnections: 1, maxChannelsPerConnection: 1, connectTimeoutMs: timeoutMs, log: () => {}, ...tls })
    const answer = yield* client.request(path, body, { timeoutMs })
    yield* Effect.sync(() => process.stdout.write(answer))
  }).pipe(
    Effect.scoped,
    Effect.catchDefect((error) => fail(messageOf(error))),
    Effect.catch((error) => fail(error._tag === "RemoteError" ? `${error.message} (${error.code})` : messageOf(error)))
  )
).pipe(Command.withDescription("Send one IIP request and print the answer"))
