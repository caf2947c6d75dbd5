// The tool commands of `iip-mesh` (echo-server, call), parsed with effect/cli.
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Runtime from "effect/Runtime"
import { Command } from "effect/cli"
import { call } from "./call.ts"
import { echoServer } from "./echoServer.ts"

const root = Command.make("iip-mesh").pipe(
  Command.withDescription("IIP library tools and the iip-mesh sidecar (iip-mesh sidecar --help, iip-mesh demo)"),
  Command.withSubcommands([echoServer, call])
)

/** A server stopped by SIGTERM or SIGINT has drained in its finalizers: that is a clean exit. */
const teardown: Runtime.Teardown = (exit, onExit) =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)

export const runCommands = (): void =>
  Command.run(root, { version: "0.1.0" }).pipe(Effect.provide(NodeServices.layer), NodeRuntime.runMain({ teardown }))
