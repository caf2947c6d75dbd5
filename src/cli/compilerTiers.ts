// Where a sidecar process leaves V8's mid-tier compiler (Maglev): once it has started (sidecar.ts,
// just before its ready line). Under a burst Maglev compiles hundreds of functions at once, and its
// compiler zones take most of the malloc memory at the burst's peak and leave it as holes glibc
// keeps for good (README, sidecar memory: without Maglev the peak of a 64-connection burst is about
// 10 MB lower and the RSS 10 s after it 8-10 MB lower). Hot code still reaches TurboFan.
//
// Why at run time and not as node's `--no-maglev`: with the flag on the command line a sidecar's
// start-up runs without Maglev too and touches about 4 MB more of the node binary's pages, which
// stay resident (idle RSS 66 against 61 MB, measured side by side); switched off after start-up,
// the idle RSS stays 61 MB and the burst runs without Maglev all the same. V8 reads the flag at
// each tiering decision; functions Maglev already compiled keep their code until TurboFan replaces it.
import * as v8 from "node:v8"

/** From now on V8 tiers hot code from its baseline compiler straight to TurboFan. */
export const leaveMaglev = (): void => {
  v8.setFlagsFromString("--no-maglev")
}
