#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=2 --v8-pool-size=1
// Entry point for the `iip-mesh` bin: the compiled CLI in dist/, which `npm install` builds from
// src/ (`npm run build` rebuilds it after a change; scripts/build.ts).
// --max-semi-space-size=2 (MB): V8's young generation otherwise grows to 2 x 16 MB semi-spaces
// (32 MB committed idle, 64 MB after load) for a process whose live heap is about 20 MB; at 2 MB an
// idle sidecar takes 86 MB instead of 101 MB, at no CPU cost we could measure (bench/sidecar,
// saturation). It must be on node's command line: V8 sizes the heap before any script runs. The
// same flag is in package.json's scripts and deploy/docker/Dockerfile's ENTRYPOINT (a test keeps
// them equal); `node bin/iip-mesh.js` skips this line, so pass it there too.
// --v8-pool-size=1: one V8 worker thread (node's default is 4) for the concurrent and parallel
// parts of garbage collection and for background compiles. A sidecar shares a core or two with its
// app; four helpers per process woke to work beside the main thread of every process on the node,
// which then waited for a core: on 2 cores (bench/sidecar, A/B alternated, other work niced) the
// pair's p99 at 1,000 req/s read 7.6-11 ms in 5 of 6 runs against 23-45 ms in all 6 with four,
// and its CPU per request at saturation 1.54x the nginx pair's (median of 6) against 1.78x; with
// nothing else running, p99 10.3, 18.8, 8.5 against 23.8, 19.0, 15.3 ms, CPU the same (README).
// MALLOC_ARENA_MAX=2: glibc's malloc otherwise gives each thread that allocates (V8's compiler and
// collector threads) an arena of its own and keeps what they freed: after a 64-connection burst a
// sidecar held 20-28 MB of free malloc memory, most of it in those arenas. Two arenas keep 2-3 MB
// less at idle and about 8 MB less after a burst (bench/sidecar), with no CPU cost we could
// measure. glibc reads it when the process starts, so it too must come from outside: here, in the
// scripts and in the image's ENV (musl and other allocators ignore it).
// V8's mid-tier compiler (Maglev) is switched off by the sidecar itself once it has started
// (src/cli/compilerTiers.ts says why there and not here).
import "../dist/cli/main.js"
