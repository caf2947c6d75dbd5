// The `iip-mesh` command line. Run from a checkout with `npm run -s iip-mesh -- <command> [args]`.
// `sidecar` and `demo` read their flags together with the environment and a config file
// (src/config), so they take their arguments as they come; loading only what each path needs keeps
// a sidecar's memory down. The other commands go through effect/cli (commands.ts).
import * as v8 from "node:v8"
import { runMain } from "./runMain.ts"

const [command, ...rest] = process.argv.slice(2)
// A sidecar allocates short-lived buffers at a steady rate: a small young generation keeps its
// resident memory near the idle figure, at no measurable CPU cost (bench/sidecar).
if (command === "sidecar") v8.setFlagsFromString("--max-semi-space-size=4")
if (command === "sidecar") runMain((await import("./sidecar.ts")).runSidecar(rest))
else if (command === "demo") runMain((await import("./demo.ts")).runDemo(rest))
else (await import("./commands.ts")).runCommands()
