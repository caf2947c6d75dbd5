// Finds the external programs the sidecar bench compares against or drives (nginx, haproxy, wrk)
// on PATH or in the sbin directories Debian installs servers into.
import { accessSync, constants } from "node:fs"
import { delimiter, join } from "node:path"

export const findExecutable = (name: string): string | undefined => {
  const dirs = [...(process.env["PATH"] ?? "").split(delimiter), "/usr/local/sbin", "/usr/sbin", "/sbin"]
  for (const dir of dirs) {
    if (dir === "") continue
    const candidate = join(dir, name)
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {
      // not here
    }
  }
  return undefined
}
