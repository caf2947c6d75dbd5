// `iip-mesh http-adapter --listen HOST:PORT --route 'HOSTREGEX=host:port#w,host:port#w' ...`: the
// reference's HTTP adapter (src/toolkit/httpAdapter.ts) as a command. Each --route gives the
// requests whose Host matches HOSTREGEX (the whole host, case-insensitive) to a load-balance client
// over those IIP servers; routes are tried in the order given. Runs until interrupted; a bad
// argument is one line on stderr and exit code 1.
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import { Command, Flag } from "effect/cli"
import { pickerNames } from "../balancer/serviceBalancer.ts"
import { messageOf } from "../iip/log.ts"
import { InvalidBackendList, parseBackendList } from "../toolkit/backendList.ts"
import * as HttpAdapter from "../toolkit/httpAdapter.ts"
import * as LoadBalanceClient from "../toolkit/loadBalanceClient.ts"
import { ArgumentError, parseHostPort, parseTimeoutFlag, parseWith } from "./args.ts"

const listen = Flag.String("listen").pipe(
  Flag.withDescription("address to listen on, HOST:PORT; port 0 picks a free port"),
  Flag.withDefault("127.0.0.1:0")
)
const route = Flag.String("route").pipe(
  Flag.withDescription("HOSTREGEX=HOST:PORT#WEIGHT,...: requests for a matching Host go to these IIP servers; repeat for more"),
  Flag.atLeast(1)
)
const method = Flag.Literals("method", pickerNames).pipe(Flag.withDescription("how a backend is picked"), Flag.withDefault("MethodMinPending"))
const paramKey = Flag.String("param-key").pipe(Flag.withDescription("MethodURIParam: the query parameter hashed"), Flag.withDefault(""))
const timeout = Flag.String("timeout").pipe(Flag.withDescription("how long a request may take, every try included"), Flag.withDefault("5s"))

/** "HOSTREGEX=list": the list holds no "=", so the last one separates them. */
const parseRoute = (text: string) => {
  const eq = text.lastIndexOf("=")
  if (eq <= 0) throw new ArgumentError({ message: `expected --route HOSTREGEX=HOST:PORT#WEIGHT,..., got ${JSON.stringify(text)}` })
  const host = text.slice(0, eq)
  try {
    new RegExp(host)
  } catch (error) {
    throw new ArgumentError({ message: `--route ${JSON.stringify(text)}: ${JSON.stringify(host)} is not a regular expression (${(error as Error).message})` })
  }
  try {
    return { host, backends: parseBackendList(text.slice(eq + 1)) }
  } catch (error) {
    throw new ArgumentError({ message: `--route ${JSON.stringify(text)}: ${error instanceof InvalidBackendList ? error.message : String(error)}` })
  }
}

export const httpAdapter = Command.make("http-adapter", { listen, route, method, paramKey, timeout }, (input) =>
  Effect.gen(function*() {
    const { host, port } = yield* parseWith(() => parseHostPort(input.listen))
    const requestTimeoutMs = yield* parseWith(() => parseTimeoutFlag("timeout", input.timeout, 0))
    const parsed = yield* parseWith(() => input.route.map(parseRoute))
    const routes: Array<HttpAdapter.HttpRoute> = []
    for (const { host: pattern, backends } of parsed) {
      const to = yield* LoadBalanceClient.make({ backends, method: input.method, paramKey: input.paramKey, requestTimeoutMs })
      routes.push({ host: pattern, to })
    }
    const adapter = yield* HttpAdapter.make({ host, port, routes, requestTimeoutMs })
    yield* Console.log(`iip-mesh http-adapter listening on ${adapter.address.host}:${adapter.address.port}`)
    return yield* Effect.never
  }).pipe(
    Effect.scoped,
    Effect.catch((error) =>
      Effect.sync(() => {
        process.stderr.write(`iip-mesh http-adapter: ${messageOf(error)}\n`)
        process.exitCode = 1
      })
    )
  )
).pipe(Command.withDescription("Run an HTTP reverse proxy in front of IIP servers, routed by Host"))
