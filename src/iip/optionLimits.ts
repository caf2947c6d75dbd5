// The numeric options of the library's entry points (IipServer, IipClient, the load-balance client
// and its service balancer, the HTTP adapter, the file server and transfers, the Effect RPC
// protocols), checked once when each is constructed, never per request. Every limit is enforced as `x > limit`, so a NaN made it false for good and
// switched the bound off; Infinity, negatives and fractions did the same or worse, and a timer
// given more than Node holds (2^31-1 ms) fires after 1 ms. A bad value is refused, not clamped: a
// typo must not quietly become another limit. Undefined is the option's default, left to its owner.
// The rule for where the refusal goes: a plain constructor throws OptionInvalid; an Effect
// constructor or layer dies with it (the defect is the OptionInvalid itself). An invalid option is
// the program's own mistake, not a condition a caller could handle, and dying keeps the error types
// of the existing layers as they are. Options read from Config are the exception: checked as they
// are read (src/effect/checkedConfig.ts), a setting out of range is the ConfigError layerConfig promises.
import * as Data from "effect/Data"

/** An option its owner refused at construction: `option` names it, with its owner ("IipServer maxQueuedBytes"). */
export class OptionInvalid extends Data.TaggedError("OptionInvalid")<{ readonly option: string; readonly value: unknown; readonly message: string }> {}

/** The longest delay a Node timer holds; a longer one fires after 1 ms. */
export const maxTimerMs = 2 ** 31 - 1

/** What values one option takes. */
export interface Limit {
  /** "count": whole numbers only; "ms": any finite number of milliseconds; "amount": any finite number (a ratio, a share). */
  readonly unit: "count" | "ms" | "amount"
  readonly min: number
  readonly max: number
  /** Infinity is accepted too: documented as "no limit" (or as the owner's own cap) by that option. */
  readonly infinite: boolean
}

/** A whole number in [min, max]. */
export const count = (min: number, max = Number.MAX_SAFE_INTEGER): Limit => ({ unit: "count", min, max, infinite: false })
/** A whole number in [min, max], or Infinity where the option documents it as "no limit". */
export const countOrInfinity = (min: number, max = Number.MAX_SAFE_INTEGER): Limit => ({ unit: "count", min, max, infinite: true })
/** A finite number in [min, max]: a ratio, a percentage, a rate. */
export const amount = (min: number, max = Number.MAX_SAFE_INTEGER): Limit => ({ unit: "amount", min, max, infinite: false })
/** A finite duration in [min, max] ms; min 1 where 0 would fire at once, max what a timer holds. */
export const durationMs = (min: 0 | 1, max = maxTimerMs): Limit => ({ unit: "ms", min, max, infinite: false })
/** As durationMs, Infinity accepted where the option documents what it becomes (its owner's cap). */
export const durationOrInfinityMs = (min: 0 | 1, max = maxTimerMs): Limit => ({ unit: "ms", min, max, infinite: true })

/** The numeric options of `O` and their limits. */
export type Limits<O> = { readonly [K in keyof O]?: NonNullable<O[K]> extends number ? Limit : never }

/** A value as a message may show it: a number as it is, anything else typed and cut short. */
const shown = (value: unknown): string => {
  if (typeof value === "number") return String(value)
  const text = typeof value === "string" ? JSON.stringify(value) : String(value)
  return `${typeof value} ${text.length > 40 ? `${text.slice(0, 40)}...` : text}`
}

const accepts = (limit: Limit, value: unknown): boolean => {
  if (typeof value !== "number") return false
  if (value === Infinity) return limit.infinite
  if (!Number.isFinite(value) || value < limit.min || value > limit.max) return false
  return limit.unit !== "count" || Number.isInteger(value)
}

const rangeText = (limit: Limit): string => {
  const what = limit.unit === "count" ? "a whole number" : limit.unit === "ms" ? "a number of ms" : "a number"
  return `${what} from ${limit.min} to ${limit.max}${limit.infinite ? " (or Infinity)" : ""}`
}

/**
 * Throws OptionInvalid for the first option of `options` outside its limit, named `owner option`;
 * an option left undefined takes its default and is not looked at.
 */
export const checkOptions = <O extends object>(owner: string, limits: Limits<O>, options: O | undefined): void => {
  if (options === undefined) return
  for (const key of Object.keys(limits) as Array<keyof O & string>) {
    const value: unknown = options[key]
    const limit = limits[key] as Limit
    if (value === undefined || accepts(limit, value)) continue
    const option = `${owner} ${key}`
    throw new OptionInvalid({ option, value, message: `${option} must be ${rangeText(limit)}, not ${shown(value)}` })
  }
}
