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
//
// How soon hot code reaches TurboFan: with Maglev switched off here, at run time, a small function
// takes about 10,000 calls (node 24, measured in a child node), not the 3,000 of V8's
// `--invocation-count-for-turbofan`, which it takes with `--no-maglev` on the command line or with
// that count set here as well. Set here at 500-3,000, or with Maglev kept on for `onBytes` alone
// (`--maglev-filter=onBytes`: every other function then goes to TurboFan after Maglev's ~550
// calls), the pair's CPU per request at saturation over the app's read 13-24 % lower (medians
// over alternated pairs), the burst's peak RSS 0.8-1.8 MB higher and the RSS 10 s after it 0.5-1.0
// MB higher; saturation against nginx showed no gain within the noise of a shared machine.
// Not taken, since the after-burst RSS is the figure issue 14 still misses (README, "Tiering
// sooner without Maglev").
import * as v8 from "node:v8"

/** From now on V8 tiers hot code from its baseline compiler straight to TurboFan. */
export const leaveMaglev = (): void => {
  v8.setFlagsFromString("--no-maglev")
}
