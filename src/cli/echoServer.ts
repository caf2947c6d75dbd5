// `iip-mesh echo-server --listen HOST:PORT [--tls-cert FILE --tls-key FILE]`: the reference's
// example echo server (`/echo`, `/echo_benchmark`), for trying the CLI and for the Go interop
// checks; with a certificate and key, in the reference's TLS mode (no client certificate asked).
// Runs until interrupted.
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { Command, Flag } from "effect/cli"
import { readFile } from "node:fs/promises"
import { messageOf } from "../iip/log.ts"
import * as Server from "../iip/server.ts"
import { ArgumentError, parseHostPort, parseWith } from "./args.ts"

const listen = Flag.String("listen").pipe(
  Flag.withDescription("address to listen on, HOST:PORT; port 0 picks a free port"),
  Flag.withDefault("127.0.0.1:0")
)

const tlsCert = Flag.String("tls-cert").pipe(Flag.withDescription("serve TLS (the reference's mode) with this PEM certificate chain"), Flag.optional)
const tlsKey = Flag.String("tls-key").pipe(Flag.withDescription("the PEM private key of --tls-cert"), Flag.optional)

/** The reference's TLS mode from the two files, both or neither. */
const referenceTls = (cert: Option.Option<string>, key: Option.Option<string>) =>
  Effect.gen(function*() {
    if (Option.isNone(cert) && Option.isNone(key)) return {}
    if (Option.isNone(cert) || Option.isNone(key)) return yield* new ArgumentError({ message: "give --tls-cert and --tls-key together" })
    const read = (file: string) => Effect.tryPromise({ try: () => readFile(file, "utf8"), catch: (e) => new ArgumentError({ message: `cannot read ${file}: ${messageOf(e)}` }) })
    const credentials = { cert: yield* read(cert.value), key: yield* read(key.value) }
    return { tls: { credentials, requireClientCertificate: false, minVersion: "TLSv1.2" as const } }
  })

export const echoServer = Command.make("echo-server", { listen, tlsCert, tlsKey }, ({ listen, tlsCert, tlsKey }) =>
  Effect.gen(function*() {
    const { host, port } = yield* parseWith(() => parseHostPort(listen))
    const tls = yield* referenceTls(tlsCert, tlsKey)
    const server = yield* Server.make({ host, port, ...tls })
    server.handle("/echo", (request) => request.data).handle("/echo_benchmark", (request) => request.data)
    const address = server.address
    yield* Console.log(`iip-mesh echo-server listening on ${address.host}:${address.port}`)
    return yield* Effect.never
  }).pipe(Effect.scoped)
).pipe(Command.withDescription("Run an IIP echo server (/echo and /echo_benchmark return the request data)"))
