// The file server's and the transfers' numeric options (src/iip/optionLimits.ts), checked once
// before anything is served, opened or dialled: a NaN limit switched its bound off (a quota of NaN
// took any upload; a partialMaxAgeMs of NaN never expired a partial file; a download window of NaN
// asked for nothing and waited forever; a timeoutMs of NaN became no timeout at all). serveFiles
// throws OptionInvalid naming the option and the value; download and upload die with it.
import { existsSync } from "node:fs"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { download } from "../../src/files/download.ts"
import { type FileServerOptions, serveFiles } from "../../src/files/server.ts"
import { upload } from "../../src/files/upload.ts"
import { IipServer } from "../../src/iip/server.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { defectOf, refusal } from "../support/optionRefusal.ts"
import { tempDir } from "./support.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

describe("file transfer options", () => {
  it("serveFiles refuses a cap, a quota, an age or a count out of range before it registers a route", () => {
    const cases: ReadonlyArray<[keyof FileServerOptions, number]> = [
      ["maxFileBytes", NaN],
      ["maxFileBytes", -1],
      ["quotaBytes", NaN],
      ["quotaBytes", Infinity],
      ["maxEntries", 0.5],
      ["partialMaxAgeMs", NaN],
      ["partialMaxAgeMs", -1],
      ["partialMaxAgeMs", 8 * 2 ** 31],
      ["maxUnfinishedUploads", NaN]
    ]
    for (const [option, value] of cases) {
      const server = new IipServer({ port: 0, mesh: false, log: () => {} })
      const thrown = refusal(() => serveFiles(server, tempDir(cleanup, "root"), { [option]: value }))
      expect(thrown.option).toBe(`file server ${option}`)
      expect(Object.is(thrown.value, value)).toBe(true)
      expect(server.router.lookup("/upload_file")).toBeUndefined()
    }
  })

  it("download and upload die with OptionInvalid before they open a file or dial", async () => {
    const local = tempDir(cleanup, "local")
    const target = { host: "127.0.0.1", port: 9, remotePath: "a.bin", localPath: join(local, "a.bin") }
    expect((await defectOf(download({ ...target, timeoutMs: NaN }))).option).toBe("file transfer timeoutMs")
    expect((await defectOf(download({ ...target, window: NaN }))).option).toBe("download window")
    expect((await defectOf(download({ ...target, window: 0 }))).option).toBe("download window")
    expect(existsSync(`${target.localPath}.iip-part`)).toBe(false)
    expect((await defectOf(upload({ ...target, timeoutMs: -1 }))).option).toBe("file transfer timeoutMs")
    expect((await defectOf(upload({ ...target, connectTimeoutMs: 0 }))).option).toBe("file transfer connectTimeoutMs")
  })
})
