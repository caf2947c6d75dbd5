#!/usr/bin/env node
// Entry point for the `iip-mesh` bin: the compiled CLI in dist/, which `npm install` builds from
// src/ (`npm run build` rebuilds it after a change; scripts/build.ts).
import "../dist/cli/main.js"
