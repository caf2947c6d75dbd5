#!/usr/bin/env node
// Entry point for the `iip-mesh` bin: Node 24 runs the TypeScript sources directly.
import "../src/cli/main.ts"
