// Parsing of the CLI's address, duration and size arguments, shared by its commands. Pure.
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import { MAX_TIMER_MS } from "../mux/deadlines.ts"
import { MaxDeadlineMs } from "../protocol/mesh.ts"

export interface HostPort {
  readonly host: string
  readonly port: number
}

export class ArgumentError extends Data.TaggedError("ArgumentError")<{ readonly message: string }> {}

/** Runs a parser inside Effect, its ArgumentError as the typed failure. */
export const parseWith = <A>(parse: () => A) => Effect.try({ try: parse, catch: (error) => error as ArgumentError })

/**
 * "HOST:PORT" (IPv6 as "[::1]:PORT", a zone as "[fe80::1%eth0]:PORT"); port 0 is allowed for
 * listening. A host is a name or address of at most 253 characters: nothing else (controls,
 * quotes, separators) reaches a lookup, an error message or a log.
 */
export const parseHostPort = (text: string): HostPort => {
  const match = /^(?:\[([0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?)\]|([A-Za-z0-9_.-]{0,253})):(\d{1,5})$/.exec(text)
  const port = match === null ? NaN : Number(match[3])
  if (match === null || port > 65535) throw new ArgumentError({ message: `expected HOST:PORT, got ${JSON.stringify(text.slice(0, 80))}` })
  return { host: match[1] ?? (match[2] === "" ? "127.0.0.1" : match[2]!), port }
}

/** "HOST:PORT/path?query" as `iq` takes it: split at the first "/" after the port. */
export const parseTarget = (text: string): HostPort & { readonly path: string } => {
  const slash = text.indexOf("/", text.startsWith("[") ? text.indexOf("]") : 0)
  if (slash === -1) throw new ArgumentError({ message: `expected HOST:PORT/path, got ${JSON.stringify(text.slice(0, 80))}` })
  return { ...parseHostPort(text.slice(0, slash)), path: text.slice(slash) }
}


/**
 * "1s", "500ms", "2m", "24h" or a bare number of seconds, as milliseconds, at most `maxMs`
 * (default MAX_TIMER_MS: the commands hand their durations to timers; a longer maximum is for a
 * duration that is not one, the issuer's leaf lifetime).
 */
export const parseDuration = (text: string, maxMs = MAX_TIMER_MS): number => {
  const shown = JSON.stringify(text.slice(0, 80))
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim())
  if (match === null) throw new ArgumentError({ message: `expected a duration like 1s or 500ms, got ${shown}` })
  const value = Number(match[1])
  const unit = match[2] ?? "s"
  const ms = Math.round(unit === "ms" ? value : unit === "s" ? value * 1000 : unit === "m" ? value * 60_000 : value * 3_600_000)
  if (!(ms <= maxMs)) throw new ArgumentError({ message: `expected a duration of at most ${maxMs} ms (${Math.floor(maxMs / 8_640_000) / 10} days), got ${shown}` })
  return ms
}

/**
 * The duration of flag `--name`, from `minMs` to MaxDeadlineMs (24 h): what the clients' and
 * transfers' timeouts take (src/iip/optionLimits.ts), refused here as the flag the user gave.
 */
export const parseTimeoutFlag = (name: string, text: string, minMs: 0 | 1): number => {
  const ms = parseDuration(text)
  if (!(ms >= minMs && ms <= MaxDeadlineMs)) {
    throw new ArgumentError({ message: `--${name}: expected a duration from ${minMs} ms to ${MaxDeadlineMs} ms (24 h), got ${JSON.stringify(text.slice(0, 80))}` })
  }
  return ms
}

const sizeUnits: Readonly<Record<string, number>> = { "": 1, b: 1, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 }

/** "4GiB", "512MiB", "64KiB", "1TiB" or a bare number of bytes, as bytes (a whole, safe number). */
export const parseSize = (text: string): number => {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim())
  const unit = sizeUnits[match?.[2]?.toLowerCase() ?? "?"]
  const bytes = match === null || unit === undefined ? NaN : Math.floor(Number(match[1]) * unit)
  if (!Number.isSafeInteger(bytes)) throw new ArgumentError({ message: `expected a size like 4GiB, 512MiB or a number of bytes, got ${JSON.stringify(text)}` })
  return bytes
}
