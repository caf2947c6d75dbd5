// What a connection close costs the hot path in optimised code: a child process runs an IipServer
// and an IipClient over loopback (closed loop, 16 in flight, 1 KiB echo), then, round after round,
// opens and closes one *other* client connection to the same server and runs calls again. The
// child runs under `--trace-deopt`; this process splits its trace at the child's round markers and
// counts, per round, the optimised functions V8 threw away because a field it had tracked as
// constant was written ("dependent field type constness changed"), and the CPU time per call of
// the calls right after that close.
//
// Finding (node 24): the wave comes at the *first* close in a process only. A field written once
// in a constructor and then again at close (a `closed` flag, a buffer dropped) turns from const to
// mutable on the object's map once, for every later object of that shape: later closes find it
// mutable already. Which fields: run the child by hand with `--trace-generalization`
// (`node --trace-generalization bench/closeDeopt.ts --child`).
//
//   npm run -s bench -- closeDeopt                 3 rounds, 30,000 warm-up and 5,000 calls a round
// Flags: --rounds N, --warmup N (calls before the first close), --calls N (calls after each close),
//        --mesh (the client in mesh mode), --no-maglev (V8 flag set at run time, as a sidecar does),
//        --no-close (the same rounds without the other connection: the control).
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { IipClient } from "../src/iip/client.ts"
import { IipServer } from "../src/iip/server.ts"
import { leaveMaglev } from "../src/cli/compilerTiers.ts"
import { benchArgs, printSummary } from "./args.ts"

const PATH = "/echo"
const INFLIGHT = 16
const MARK = "### round "
const CONSTNESS = "dependent field type constness changed"

/** Child side: warm up, then per round close another connection and run calls; prints a marker line per round. */
const child = async (args: ReadonlyArray<string>): Promise<void> => {
  const { number } = benchArgs(args)
  if (args.includes("--no-maglev")) leaveMaglev()
  const server = new IipServer({ host: "127.0.0.1", port: 0 })
  server.handle(PATH, (request) => request.data)
  await server.listen()
  const options = { host: "127.0.0.1", port: server.address.port, maxConnections: 1, mesh: args.includes("--mesh") }
  const client = new IipClient(options)
  const payload = Buffer.alloc(1024, 7)
  const callOptions = { timeoutMs: 10_000 }
  const run = (client: IipClient, calls: number): Promise<number> =>
    new Promise((resolve, reject) => {
      const cpu = process.cpuUsage()
      let left = calls
      let inflight = 0
      const next = (): void => {
        while (inflight < INFLIGHT && left > 0) {
          left--
          inflight++
          client.send(PATH, payload, callOptions, (error, data) => {
            inflight--
            if (error !== undefined || data?.length !== payload.length) return reject(error ?? new Error(`echoed ${data?.length} bytes`))
            if (left > 0) return next()
            if (inflight > 0) return
            const used = process.cpuUsage(cpu)
            resolve((used.user + used.system) / calls)
          })
        }
      }
      next()
    })
  await run(client, number("--warmup", 30_000))
  for (let round = 1; round <= number("--rounds", 3); round++) {
    if (!args.includes("--no-close")) {
      const other = new IipClient(options)
      await run(other, 1)
      other.close()
      // The server's side of that connection closes when it reads the FIN: wait until it is gone.
      while (server.connectionCount > 1) await new Promise((resolve) => setImmediate(resolve))
    }
    const cpuUs = await run(client, number("--calls", 5_000))
    process.stdout.write(`${MARK}${JSON.stringify({ round, cpuUs })}\n`)
  }
  client.close()
  await server.close()
}

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const self = fileURLToPath(import.meta.url)
  const child = spawn(process.execPath, ["--trace-deopt", self, "--child", ...args], { stdio: ["ignore", "pipe", "inherit"] })
  let trace = ""
  child.stdout.setEncoding("utf8")
  child.stdout.on("data", (text: string) => (trace += text))
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve))
  if (code !== 0) throw new Error(`child exited with ${code}`)
  // Each round's marker closes the part of the trace that holds its close and its calls.
  const rounds: Array<{ round: number; constnessDeopts: number; cpuUsPerCall: number }> = []
  let deopts = 0
  for (const line of trace.split("\n")) {
    if (line.includes(CONSTNESS)) deopts++
    if (!line.startsWith(MARK)) continue
    const { round, cpuUs } = JSON.parse(line.slice(MARK.length)) as { round: number; cpuUs: number }
    rounds.push({ round, constnessDeopts: deopts, cpuUsPerCall: cpuUs })
    deopts = 0
  }
  process.stdout.write("round  constness deopts  CPU us/call after the close\n")
  for (const r of rounds) process.stdout.write(`${String(r.round).padStart(5)}  ${String(r.constnessDeopts).padStart(16)}  ${r.cpuUsPerCall.toFixed(1).padStart(27)}\n`)
  printSummary({ rounds })
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv.includes("--child")) await child(process.argv.slice(2))
