// Preloaded into a child process (`node --import <this file> ...`): writes the URL of every module
// the process loads (ESM and CommonJS) to stderr as a `loaded <url>` line, so a test can tell what
// a command loads before it is ready.
import { registerHooks } from "node:module"

registerHooks({
  load(url, context, next) {
    process.stderr.write(`loaded ${url}\n`)
    return next(url, context)
  }
})
