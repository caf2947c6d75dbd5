// The app leg's connection pool (inbound.ts): undici's Pool, loaded from its own module rather than
// undici's index, which loads the whole library (fetch, WebSocket, cache, mock agents, proxies)
// for about 2.5 MB more of an idle sidecar's resident memory (undici has no exports map, so its
// files are importable as they are; test/sidecar/appPool.test.ts keeps the two the same class).
import { createRequire } from "node:module"
import type { Pool as UndiciPool } from "undici"

export const Pool: typeof UndiciPool = createRequire(import.meta.url)("undici/lib/dispatcher/pool.js")
