// The child side of the benches' server children (children.ts starts them): serve, print the port,
// exit with the parent. Kept apart from children.ts, which imports the bench's parsing and effect,
// so that a child loads only what it serves with (grpcApp.ts: the gRPC bench's app, whose heap is
// the app's own, not the bench's).
/** The child side: serve, print the port, exit with the parent. */
export const serveChild = async (start: () => Promise<number>): Promise<void> => {
  // A parent that gave up waiting for the port (or went) closed its ends of the pipes: the port's
  // write then fails with EPIPE, an 'error' event that, unhandled, crashed the child. With nobody
  // to serve, the child goes quietly.
  process.stdout.on("error", () => process.exit(0))
  process.stdin.on("error", () => process.exit(0))
  const port = await start()
  process.stdin.on("end", () => process.exit(0))
  process.stdin.resume()
  process.stdout.write(`${port}\n`)
}
