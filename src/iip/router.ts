// Path routing of an IIP server: exact paths as the reference matches them (PROTOCOL.md §6.2),
// plus prefix routes (longest prefix wins) that the reference lacks. Lookup is on the parsed path.
import * as Data from "effect/Data"
import { Limits } from "../protocol/constants.ts"
import { pathByteLength } from "../protocol/packet.ts"
import { parseRequestPath } from "../protocol/requestPath.ts"

export class InvalidRoute extends Data.TaggedError("InvalidRoute")<{ readonly message: string }> {}

const checkRoute = (path: string): void => {
  if (path === "") throw new InvalidRoute({ message: "a route needs a non-empty path" })
  if (pathByteLength(path) > Limits.maxSendPathBytes) {
    throw new InvalidRoute({ message: `route ${JSON.stringify(path.slice(0, 80))} is longer than ${Limits.maxSendPathBytes} bytes` })
  }
  if (parseRequestPath(path).path !== path) {
    throw new InvalidRoute({ message: `route ${JSON.stringify(path)} is not a plain path: requests could never match it` })
  }
}

export class Router<H> {
  private readonly exact = new Map<string, H>()
  /** Sorted longest first, so the first match is the most specific. */
  private prefixes: Array<{ readonly prefix: string; readonly handler: H }> = []

  /** Routes requests whose parsed path is exactly `path`. Replaces an earlier handler, as the reference does. */
  add(path: string, handler: H): void {
    checkRoute(path)
    this.exact.set(path, handler)
  }

  /** Routes requests whose parsed path starts with `prefix` and has no exact route. */
  addPrefix(prefix: string, handler: H): void {
    checkRoute(prefix)
    this.prefixes = [...this.prefixes.filter((r) => r.prefix !== prefix), { prefix, handler }].sort(
      (a, b) => b.prefix.length - a.prefix.length
    )
  }

  remove(path: string): boolean {
    const before = this.prefixes.length
    this.prefixes = this.prefixes.filter((r) => r.prefix !== path)
    return this.exact.delete(path) || this.prefixes.length !== before
  }

  /** Whether `path` has an exact route (what the reference calls a registered path). */
  has(path: string): boolean {
    return this.exact.has(path)
  }

  lookup(path: string): H | undefined {
    const handler = this.exact.get(path)
    if (handler !== undefined || this.prefixes.length === 0) return handler
    for (const route of this.prefixes) if (path.startsWith(route.prefix)) return route.handler
    return undefined
  }

  get paths(): ReadonlyArray<string> {
    return [...this.exact.keys(), ...this.prefixes.map((r) => r.prefix + "*")]
  }
}
