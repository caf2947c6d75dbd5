// The first thing a test child that sends on the network (mDNS) does: it runs ONLY inside a network
// namespace a test created, so it checks that every IPv4 address it can see starts with one of
// `allowedPrefixes` (the namespace's subnet, loopback) and exits otherwise, before any packet.
import os from "node:os"

/** Writes a "fatal" line and exits (code 3) unless every IPv4 address here starts with one of `allowedPrefixes`. */
export const exitUnlessInTestNamespace = (allowedPrefixes: ReadonlyArray<string>, write: (line: Record<string, unknown>) => void): void => {
  const foreign = Object.values(os.networkInterfaces())
    .flatMap((addresses) => addresses ?? [])
    .filter((a) => a.family === "IPv4" && !allowedPrefixes.some((prefix) => a.address.startsWith(prefix)))
  if (foreign.length > 0 || allowedPrefixes.length === 0) {
    write({ type: "fatal", reason: `not inside a test namespace: ${foreign.map((a) => a.address).join(", ")}` })
    process.exit(3)
  }
}
