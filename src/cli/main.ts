// The `iip-mesh` command line. Run from a checkout with `npm run -s iip-mesh -- <command> [args]`.
// `sidecar` and `demo` read their flags together with the environment and a config file
// (src/config), so they take their arguments as they come; loading only what each path needs keeps
// a sidecar's memory down. The other commands go through effect/cli (commands.ts). The commands
// that serve until stopped get the process-level last line of defence (lastResort.ts); the
// one-shot ones (call, download, upload) keep Node's default, a crash with a non-zero exit.
import { runMain } from "./runMain.ts"

const [command, ...rest] = process.argv.slice(2)
const longRunning = new Set(["sidecar", "demo", "echo-server", "file-server", "http-adapter", "identity"])
if (command !== undefined && longRunning.has(command) && !rest.includes("--help")) {
  const { installLastResort } = await import("./lastResort.ts")
  installLastResort({ command })
}
if (command === "sidecar") runMain((await import("./sidecar.ts")).runSidecar(rest))
else if (command === "demo") runMain((await import("./demo.ts")).runDemo(rest))
else (await import("./commands.ts")).runCommands()
