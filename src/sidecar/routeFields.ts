// Field schemas the routes document's parts share (routes.ts, rateLimits.ts): a label (a route's
// name, a subset), a target service's name, and a header name.
import * as Schema from "effect/Schema"
import { isSubsetLabel } from "../balancer/subsets.ts"

export const Label = Schema.String.pipe(Schema.check(Schema.makeFilter((text: string) => (isSubsetLabel(text) ? undefined : `Expected a label (1-63 of A-Z a-z 0-9 . _ -), got ${JSON.stringify(text.slice(0, 80))}`))))

export const ServiceName = Schema.String.pipe(
  Schema.check(Schema.makeFilter((text: string) => (/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/.test(text) ? undefined : `Expected a service name (a DNS label: a-z, 0-9, -), got ${JSON.stringify(text.slice(0, 80))}`)))
)

/** An HTTP header name (a token), at most 256 characters. */
export const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$/
