// Benchmark dispatcher: `npm run -s bench -- <name> [flags]` runs bench/<name>.ts's `main` with
// the remaining arguments. Each bench prints a table and, as its last stdout line, one JSON object.
// Add a bench with one line in `benches` below.

interface Bench {
  readonly main: (args: ReadonlyArray<string>) => Promise<void>
}

const benches: Record<string, () => Promise<Bench>> = {
  alloc: () => import("./alloc.ts"),
  answerBudget: () => import("./answerBudget.ts"),
  balancer: () => import("./balancer.ts"),
  callCpu: () => import("./callCpu.ts"),
  closeDeopt: () => import("./closeDeopt.ts"),
  compression: () => import("./compression.ts"),
  discoveryFlap: () => import("./discoveryFlap.ts"),
  echo: () => import("./echo.ts"),
  grpc: () => import("./grpc.ts"),
  grpcBeside: () => import("./grpcBeside.ts"),
  grpcAppHeads: () => import("./grpcAppHeads.ts"),
  hpack: () => import("./hpack.ts"),
  h2Frames: () => import("./h2Frames.ts"),
  h2Conn: () => import("./h2Conn.ts"),
  sidecar: () => import("./sidecar.ts"),
  rpc: () => import("./rpc.ts"),
  rpcShapes: () => import("./rpcShapes.ts"),
  stream: () => import("./stream.ts"),
  tlsWrite: () => import("./tlsWrite.ts"),
  traceCost: () => import("./traceCost.ts"),
  tunnels: () => import("./tunnels.ts")
}

const [name, ...rest] = process.argv.slice(2)
const load = name === undefined ? undefined : benches[name]
if (load === undefined) {
  process.stderr.write(
    `${name === undefined ? "no bench named" : `unknown bench ${JSON.stringify(name)}`}\n` +
      `usage: npm run -s bench -- <name> [flags]\navailable: ${Object.keys(benches).join(", ")}\n`
  )
  process.exit(2)
}
try {
  await (await load()).main(rest)
} catch (error) {
  process.stderr.write(`bench ${name} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
  process.exit(1)
}
