// The `iip-mesh` command line: one subcommand per tool. Run from a checkout with
// `npm run -s iip-mesh -- <command> [args]`.
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Cause, Effect, Exit, Runtime } from "effect"
import { Command } from "effect/cli"
import { call } from "./call.ts"
import { echoServer } from "./echoServer.ts"
import { runDemo } from "./demo.ts"
import { runSidecar } from "./sidecar.ts"

const root = Command.make("iip-mesh").pipe(
  Command.withDescription("IIP library tools and the iip-mesh sidecar"),
  Command.withSubcommands([echoServer, call])
)

/** A server stopped by SIGTERM or SIGINT has drained in its finalizers: that is a clean exit. */
const teardown: Runtime.Teardown = (exit, onExit) =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)

// The sidecar reads its flags together with its environment and config file (src/config), so it
// and the demo built on it take their arguments as they come rather than through the command parser.
const [command, ...rest] = process.argv.slice(2)
const program: Effect.Effect<unknown, unknown> = command === "sidecar"
  ? runSidecar(rest)
  : command === "demo"
  ? runDemo(rest)
  : Command.run(root, { version: "0.1.0" }).pipe(Effect.provide(NodeServices.layer))
program.pipe(NodeRuntime.runMain({ teardown }))
