// The types of stallWatch.mjs (plain JavaScript: see its header), for the benches that call it in their own process.
import type { HopStall } from "./pair.ts"

/** Calls `report` with each event-loop stall over `stallMs` (default 10) of this process. */
export declare const watchStalls: (report: (stall: HopStall) => void, stallMs?: number) => void
