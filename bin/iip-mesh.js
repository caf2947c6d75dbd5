#!/usr/bin/env -S node --max-semi-space-size=2
// Entry point for the `iip-mesh` bin: the compiled CLI in dist/, which `npm install` builds from
// src/ (`npm run build` rebuilds it after a change; scripts/build.ts).
// --max-semi-space-size=2 (MB): V8's young generation otherwise grows to 2 x 16 MB semi-spaces
// (32 MB committed idle, 64 MB after load) for a process whose live heap is about 20 MB; at 2 MB an
// idle sidecar takes 86 MB instead of 101 MB, at no CPU cost we could measure (bench/sidecar,
// saturation). It must be on node's command line: V8 sizes the heap before any script runs. The
// same flag is in package.json's scripts and deploy/docker/Dockerfile's ENTRYPOINT (a test keeps
// them equal); `node bin/iip-mesh.js` skips this line, so pass it there too.
import "../dist/cli/main.js"
