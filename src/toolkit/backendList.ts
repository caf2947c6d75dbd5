// The reference load-balance client's backend list (iip-protocol.md §8.1): `host:port#weight`
// entries separated by commas, weight an integer from 1 to 100. The reference silently skips an
// entry it cannot read (no `#weight`, a bad weight, an empty address); here every bad entry is an
// error that names it and says what was expected, so a typo cannot quietly remove a backend. The
// first step of the load-balance client (loadBalanceClient.ts) and the http-adapter command. Pure.
import * as Data from "effect/Data"

export class InvalidBackendList extends Data.TaggedError("InvalidBackendList")<{ readonly message: string }> {}

export interface BackendEntry {
  readonly host: string
  readonly port: number
  /** `host:port` (`[v6]:port`): the backend's identity. */
  readonly address: string
  /** 1 to 100: the backend's share of the reference's weighted list (`a#2,b#1` gives [a, b, a]). */
  readonly weight: number
}

export const minWeight = 1
export const maxWeight = 100

const expected = "expected HOST:PORT#WEIGHT with WEIGHT an integer from 1 to 100"

/** The problem with one entry, or its reading. */
const readEntry = (text: string): BackendEntry | string => {
  const hash = text.lastIndexOf("#")
  if (hash === -1) return `${JSON.stringify(text)} has no weight (${expected})`
  const addressText = text.slice(0, hash).trim()
  const weightText = text.slice(hash + 1).trim()
  const address = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:[\]#]+)):(\d{1,5})$/.exec(addressText)
  const port = address === null ? NaN : Number(address[3])
  if (address === null || port < 1 || port > 65535) return `${JSON.stringify(text)}: ${JSON.stringify(addressText)} is not HOST:PORT (${expected})`
  const weight = /^\d{1,3}$/.test(weightText) ? Number(weightText) : NaN
  if (!(weight >= minWeight && weight <= maxWeight)) {
    return `${JSON.stringify(text)}: weight ${JSON.stringify(weightText)} is not an integer from ${minWeight} to ${maxWeight}`
  }
  const v6 = address[1]
  const host = v6 ?? address[2]!
  return { host, port, address: v6 === undefined ? `${host}:${port}` : `[${host}]:${port}`, weight }
}

/** One `host:port#weight` entry; throws InvalidBackendList. */
export const parseBackend = (text: string): BackendEntry => {
  const entry = readEntry(text.trim())
  if (typeof entry === "string") throw new InvalidBackendList({ message: `invalid backend ${entry}` })
  return entry
}

/** A comma-separated list; throws InvalidBackendList naming every bad entry. */
export const parseBackendList = (text: string): Array<BackendEntry> => {
  if (text.trim() === "") throw new InvalidBackendList({ message: `the backend list is empty (${expected}, comma-separated)` })
  const problems: Array<string> = []
  const entries: Array<BackendEntry> = []
  text.split(",").forEach((raw, index) => {
    const item = raw.trim()
    if (item === "") return void problems.push(`entry ${index + 1} is empty`)
    const entry = readEntry(item)
    if (typeof entry === "string") return void problems.push(entry)
    if (entries.some((e) => e.address === entry.address)) return void problems.push(`${entry.address} is listed twice`)
    entries.push(entry)
  })
  if (problems.length > 0) throw new InvalidBackendList({ message: `invalid backend list ${JSON.stringify(text)}: ${problems.join("; ")}` })
  return entries
}
