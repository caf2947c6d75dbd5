// Where a bench sidecar allocates, per request (issue 14): loaded into each sidecar by bench/alloc.ts
// (`--import`), it starts V8's sampling heap profiler (objects the scavenger and the mark-compactor
// collect included, so the sum is every byte allocated, not just what survived) and counts GCs on
// the first SIGUSR2 (writing alloc-<pid>.started once it runs), and on the second stops and writes $ALLOC_PROBE_DIR/alloc-<pid>.json: the
// estimated bytes allocated, scavenges and mark-compacts, and the allocation sites by bytes.
// Plain JavaScript for the reason stallProbe.mjs gives (a .ts file loads Node's type stripper).
import { writeFileSync } from "node:fs"
import { Session } from "node:inspector"
import { basename, join } from "node:path"
import { constants, PerformanceObserver } from "node:perf_hooks"

/** Bytes between samples: small enough that a ~100-byte site is seen thousands of times over a run. */
const SAMPLING_INTERVAL = Number(process.env.ALLOC_PROBE_INTERVAL ?? 256)
const dir = process.env.ALLOC_PROBE_DIR ?? "."

let session
let observer
let scavenges = 0
let markCompacts = 0

const post = (method, params) =>
  new Promise((resolve, reject) => session.post(method, params, (error, result) => (error ? reject(error) : resolve(result))))

/** Frames per site: 1, the allocating function alone; more, its callers too (ALLOC_PROBE_DEPTH), to tell who reaches a shared one (node's internals). */
const DEPTH = Math.max(1, Math.min(8, Number(process.env.ALLOC_PROBE_DEPTH ?? 1)))

const frameOf = (frame) => `${frame.functionName || "(anonymous)"} ${basename(frame.url) || "(native)"}:${frame.lineNumber + 1}`

/** Self bytes per site (function, file, line, and DEPTH - 1 callers), summed over the call tree. */
const sitesOf = (head) => {
  const sites = new Map()
  const visit = (node, callers) => {
    const frames = [frameOf(node.callFrame), ...callers].slice(0, DEPTH)
    if (node.selfSize > 0) {
      const site = frames.join(" < ")
      sites.set(site, (sites.get(site) ?? 0) + node.selfSize)
    }
    for (const child of node.children) visit(child, frames)
  }
  visit(head, [])
  return [...sites].sort((x, y) => y[1] - x[1])
}

const start = async () => {
  session = new Session()
  session.connect()
  scavenges = 0
  markCompacts = 0
  observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if (entry.detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) scavenges++
      else if (entry.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) markCompacts++
    }
  })
  observer.observe({ entryTypes: ["gc"] })
  await post("HeapProfiler.enable")
  // ALLOC_PROBE_SURVIVORS: only what outlived a scavenge (promoted to the old generation, or alive at
  // the end), i.e. what the mark-compactor will have to collect: the sites behind full GCs.
  const survivors = process.env.ALLOC_PROBE_SURVIVORS === "1"
  await post("HeapProfiler.startSampling", { samplingInterval: SAMPLING_INTERVAL, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: !survivors })
  writeFileSync(join(dir, `alloc-${process.pid}.started`), "")
}

const stop = async () => {
  const { profile } = await post("HeapProfiler.stopSampling")
  observer.disconnect()
  session.disconnect()
  session = undefined
  const sites = sitesOf(profile.head)
  const bytes = sites.reduce((sum, [, size]) => sum + size, 0)
  // The whole sampled profile too when asked (ALLOC_PROBE_KEEP: a directory), for DevTools' Memory tab or a script.
  if (process.env.ALLOC_PROBE_KEEP) writeFileSync(join(process.env.ALLOC_PROBE_KEEP, `alloc-${process.pid}.heapprofile`), JSON.stringify(profile))
  writeFileSync(join(dir, `alloc-${process.pid}.json`), JSON.stringify({ bytes, scavenges, markCompacts, sites: sites.slice(0, 60) }))
}

process.on("SIGUSR2", () => {
  ;(session === undefined ? start() : stop()).catch((error) => process.stderr.write(`alloc probe: ${error.message}\n`))
})
