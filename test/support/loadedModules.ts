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

// Builtins node loads from inside (node:http's ES namespace loading node's undici, say) go past
// the hooks: just before the sidecar's ready line, every module node has loaded is written to
// stderr as one `builtins <list>` line.
const moduleLoadList = (process as unknown as { readonly moduleLoadList: ReadonlyArray<string> }).moduleLoadList
const writeStdout = process.stdout.write.bind(process.stdout) as (...args: Array<unknown>) => boolean
process.stdout.write = ((...args: Array<unknown>) => {
  if (String(args[0]).includes("\"sidecar-ready\"")) process.stderr.write(`builtins ${moduleLoadList.join(",")}\n`)
  return writeStdout(...args)
}) as typeof process.stdout.write
