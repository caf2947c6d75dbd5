// The `iip-mesh` command line: one subcommand per tool. Run from a checkout with
// `npm run -s iip-mesh -- <command> [args]`.
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect } from "effect"
import { Command } from "effect/cli"
import { call } from "./call.ts"
import { echoServer } from "./echoServer.ts"

const root = Command.make("iip-mesh").pipe(
  Command.withDescription("IIP library tools and the iip-mesh sidecar"),
  Command.withSubcommands([echoServer, call])
)

Command.run(root, { version: "0.1.0" }).pipe(Effect.provide(NodeServices.layer), NodeRuntime.runMain)
