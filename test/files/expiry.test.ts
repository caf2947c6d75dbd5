// Unfinished uploads (`<path>.iip-part`) expire: one not written for the server's partial age is
// removed (its bytes and its entry given back to the quota) by a sweep on the server's Clock, and
// at start; one written within that age is kept and resumes. Runs on the TestClock, with a real
// server on 127.0.0.1 port 0 and a raw client; the server's fibers run on the test's Clock.
// With that Clock's wall time stepped by a day (its monotonic time and sleeps the TestClock's): a
// step forward removes no partial written within the age, a step back does not keep an abandoned
// one for the step's length.
import { describe, expect, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import { TestClock } from "effect/testing"
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { type FileServerOptions, openRoot, serveFiles } from "../../src/files/server.ts"
import { encodeChecksumRequest, encodeUploadRequest, FilePath } from "../../src/files/wire.ts"
import { taskId } from "../../src/files/transfer.ts"
import type { Log } from "../../src/iip/log.ts"
import { IipServer } from "../../src/iip/server.ts"
import { Supervisor } from "../../src/iip/supervisor.ts"
import { Cleanup, frame, RawClient } from "../support/iipRaw.ts"
import { HOUR_MS, steppedEffectClock } from "../support/wallClock.ts"
import { tempDir } from "./support.ts"

const maxAgeMs = 60_000

/** A file server on the test's Clock and a raw client of it; both closed by `cleanup`. */
const serve = (cleanup: Cleanup, root: string, options: FileServerOptions, log: Log = () => {}) =>
  Effect.gen(function*() {
    const server = new IipServer({ host: "127.0.0.1", port: 0, mesh: false, log, idleTimeoutMs: 0, supervisor: yield* Supervisor.current })
    serveFiles(server, yield* Effect.promise(() => openRoot(root)), options)
    yield* Effect.promise(() => server.listen())
    cleanup.add(() => server.close())
    const client = yield* Effect.promise(() => RawClient.connect(server.address.port, cleanup))
    yield* Effect.promise(() => client.newChannel())
    const send = (path: string, offset: number, content: string, completed = false) =>
      Effect.promise(async () => {
        client.write(frame(1, FilePath.upload, 1, encodeUploadRequest(taskId, path, offset, completed, Buffer.from(content))))
        return (await client.next(10_000)).data.toString()
      })
    const heldSize = (path: string) =>
      Effect.promise(async () => {
        client.write(frame(1, FilePath.checksum, 1, encodeChecksumRequest({ filePath: path, upload: true, length: undefined })))
        return (JSON.parse((await client.next(10_000)).data.toString()) as { Size: number }).Size
      })
    return { send, heldSize }
  })

/** Resolves once `condition` holds, checked after each turn of the event loop; fails after `withinMs` (5 s). */
const waitUntil = (condition: () => boolean, what: string, withinMs = 5000) =>
  Effect.tryPromise(() =>
    new Promise<void>((resolve, reject) => {
      const deadline = performance.now() + withinMs
      const check = () => (condition() ? resolve() : performance.now() > deadline ? reject(new Error(`timed out waiting for ${what}`)) : setImmediate(check))
      check()
    })
  )

/**
 * Advances the Clock one sweep interval at a time, a turn of the event loop apart, until `path` is
 * gone; fails after 5 s. A sweep sleeps until its next round only once its round has ended, which
 * can be after what the test waited for (a log line): an advance before that wakes nothing, and the
 * removal itself takes what the machine's file system calls take.
 */
const sweepUntilGone = (path: string, what: string) =>
  Effect.gen(function*() {
    const deadline = performance.now() + 5000
    while (existsSync(path)) {
      if (performance.now() > deadline) return yield* Effect.fail(new Error(`timed out waiting for ${what}`))
      yield* TestClock.adjust(maxAgeMs / 8)
      yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
    }
  })

const withCleanup = <A, E>(body: (cleanup: Cleanup) => Effect.Effect<A, E>) =>
  Effect.suspend(() => {
    const cleanup = new Cleanup()
    return body(cleanup).pipe(Effect.ensuring(Effect.promise(() => cleanup.run())))
  })

describe("unfinished uploads expire", () => {
  it.effect("one not written for the partial age is removed and its quota freed; one written within it resumes", () =>
    withCleanup((cleanup) =>
      Effect.gen(function*() {
        yield* TestClock.setTime(Date.now())
        const root = tempDir(cleanup, "expiry")
        const { send } = yield* serve(cleanup, root, { quotaBytes: 100, partialMaxAgeMs: maxAgeMs })
        expect(yield* send("a.bin", 0, "a".repeat(60))).toBe(`{"TaskId":1,"DoneBytes":60}`)
        // An abandoned upload holds the quota (and more than half of it, the unfinished uploads' share) while it may still resume.
        expect(yield* send("b.bin", 0, "b".repeat(60))).toMatch(/past half of what finished files leave of this server's quota of 100 bytes/)
        // Written within the age, it resumes; its age counts from its last write, not its first.
        yield* TestClock.adjust(maxAgeMs - 1000)
        expect(yield* send("a.bin", 60, "a".repeat(10))).toBe(`{"TaskId":1,"DoneBytes":10}`)
        yield* TestClock.adjust(maxAgeMs - 1000)
        expect(yield* send("a.bin", 70, "a")).toBe(`{"TaskId":1,"DoneBytes":1}`)
        // Then no longer written, it goes within a quarter of the age more, and the quota has room again.
        yield* TestClock.adjust(maxAgeMs + maxAgeMs / 4 + 1000)
        yield* waitUntil(() => !existsSync(join(root, "a.bin.iip-part")), "the expired partial to be removed")
        expect(yield* send("a.bin", 71, "a")).toMatch(/no unfinished upload of \\"a.bin\\" to continue at 71: start at 0/)
        expect(yield* send("b.bin", 0, "b".repeat(90))).toBe(`{"TaskId":1,"DoneBytes":90}`)
        expect(yield* send("b.bin", 90, "", true)).toBe(`{"TaskId":1,"DoneBytes":0}`)
        // A finished file never expires.
        yield* TestClock.adjust(3 * maxAgeMs)
        expect(readFileSync(join(root, "b.bin"), "utf8")).toBe("b".repeat(90))
      })
    ))

  it.effect("one idle for the idle time is removed when a request would not fit otherwise; one written within it is not", () =>
    withCleanup((cleanup) =>
      Effect.gen(function*() {
        yield* TestClock.setTime(Date.now())
        const root = tempDir(cleanup, "idle")
        const idleMs = 8_000
        const { send, heldSize } = yield* serve(cleanup, root, { quotaBytes: 100, partialMaxAgeMs: maxAgeMs, partialIdleMs: idleMs })
        const advance = (ms: number) =>
          Effect.gen(function*() {
            // One sweep interval at a time, a turn of the event loop apart, so that each sweep runs.
            for (let done = 0; done < ms; done += idleMs / 8) {
              yield* TestClock.adjust(idleMs / 8)
              yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
            }
          })
        expect(yield* send("a.bin", 0, "a".repeat(40))).toBe(`{"TaskId":1,"DoneBytes":40}`)
        expect(yield* send("b.bin", 0, "b".repeat(50), true)).toBe(`{"TaskId":1,"DoneBytes":50}`)
        // Within the idle time it may resume: a request short of room is refused, a.bin kept.
        yield* advance(idleMs / 2)
        expect(yield* send("c.bin", 0, "c".repeat(30), true)).toMatch(/needs 30 more bytes, past this server's quota of 100 bytes for its root \(90 bytes held\)/)
        expect(readFileSync(join(root, "a.bin.iip-part"), "utf8")).toBe("a".repeat(40))
        // Idle for longer (at most a quarter more, the sweep's interval), it gives way, oldest first.
        yield* advance(idleMs / 2 + idleMs / 4 + idleMs / 8)
        expect(existsSync(join(root, "a.bin.iip-part"))).toBe(true)
        // One that would not fit even with it gone removes nothing: a.bin would be lost for nothing.
        expect(yield* send("z.bin", 0, "z".repeat(60), true)).toMatch(/needs 60 more bytes, past this server's quota of 100 bytes for its root \(90 bytes held\)/)
        expect(existsSync(join(root, "a.bin.iip-part"))).toBe(true)
        expect(yield* send("c.bin", 0, "c".repeat(30), true)).toBe(`{"TaskId":1,"DoneBytes":30}`)
        expect(existsSync(join(root, "a.bin.iip-part"))).toBe(false)
        // Its client, come back, finds nothing to resume (as our upload client asks first), and starts again.
        expect(yield* heldSize("a.bin")).toBe(0)
        expect(yield* send("a.bin", 0, "a".repeat(20), true)).toBe(`{"TaskId":1,"DoneBytes":20}`)
        expect(readdirSync(root).sort()).toStrictEqual(["a.bin", "b.bin", "c.bin"])
      })
    ))

  it.effect("at start, partials older than the age are removed and younger ones resume", () =>
    withCleanup((cleanup) =>
      Effect.gen(function*() {
        yield* TestClock.setTime(Date.now())
        const root = tempDir(cleanup, "expiry-start")
        mkdirSync(join(root, "d"))
        const agedSeconds = (seconds: number) => (Date.now() - seconds * 1000) / 1000
        for (const [path, ageSeconds] of [["old.bin.iip-part", 2 * maxAgeMs / 1000], ["d/old.bin.iip-part", maxAgeMs / 1000 + 1], ["young.bin.iip-part", 10]] as const) {
          writeFileSync(join(root, path), "x".repeat(40))
          utimesSync(join(root, path), agedSeconds(ageSeconds), agedSeconds(ageSeconds))
        }
        const { send, heldSize } = yield* serve(cleanup, root, { quotaBytes: 100, partialMaxAgeMs: maxAgeMs })
        yield* waitUntil(() => !existsSync(join(root, "old.bin.iip-part")) && !existsSync(join(root, "d/old.bin.iip-part")), "the old partials to be removed")
        expect(yield* heldSize("young.bin")).toBe(40)
        expect(yield* send("young.bin", 40, "y".repeat(20))).toBe(`{"TaskId":1,"DoneBytes":20}`)
        // 60 bytes held: the 80 the old partials held were given back (c.bin whole in one request:
        // young.bin holds more than the unfinished uploads' share, so a new unfinished one waits).
        expect(yield* send("c.bin", 0, "c".repeat(40), true)).toBe(`{"TaskId":1,"DoneBytes":40}`)
      })
    ))

  it.effect("a partial that cannot be removed is logged and removed at a later sweep, its quota freed then", () =>
    withCleanup((cleanup) =>
      Effect.gen(function*() {
        yield* TestClock.setTime(Date.now())
        const root = tempDir(cleanup, "expiry-fails")
        const outside = tempDir(cleanup, "expiry-outside")
        mkdirSync(join(root, "d"))
        mkdirSync(join(root, "gone"))
        const logged: Array<string> = []
        // 200: room for both unfinished uploads within their share (half of it).
        const { send } = yield* serve(cleanup, root, { quotaBytes: 200, partialMaxAgeMs: maxAgeMs }, (event, fields) => logged.push(`${event} ${JSON.stringify(fields)}`))
        expect(yield* send("d/a.bin", 0, "a".repeat(60))).toBe(`{"TaskId":1,"DoneBytes":60}`)
        expect(yield* send("gone/g.bin", 0, "g")).toBe(`{"TaskId":1,"DoneBytes":1}`)
        // Its directory is a symlink when the sweep comes (refused, as any path leading outside);
        // another's directory was removed by someone else, partial and all.
        renameSync(join(root, "d"), join(root, "d-old"))
        symlinkSync(outside, join(root, "d"))
        rmSync(join(root, "gone"), { recursive: true })
        yield* TestClock.adjust(maxAgeMs + maxAgeMs / 4 + 1000)
        yield* waitUntil(() => logged.length > 0, "the failed removal to be logged")
        // One line per sweep that failed (how many sweeps ran within the advance depends on when
        // each failed round ended), each naming the partial and why.
        for (const line of logged) expect(line).toMatch(/^partial-expiry-failed {"partial":".*\/d\/a\.bin\.iip-part","error":"ENOTDIR: not a directory/)
        expect(existsSync(join(root, "d-old", "a.bin.iip-part"))).toBe(true)
        // Put back, it goes at the next sweep and its 60 bytes are free again.
        rmSync(join(root, "d"))
        renameSync(join(root, "d-old"), join(root, "d"))
        yield* sweepUntilGone(join(root, "d", "a.bin.iip-part"), "the partial to be removed at a later sweep")
        const failures = logged.length
        expect(yield* send("b.bin", 0, "b".repeat(190))).toBe(`{"TaskId":1,"DoneBytes":190}`)
        expect(logged).toHaveLength(failures)
      })
    ))

  it.effect("a log sink that throws does not end the sweep: the partial it failed to remove goes at a later sweep", () =>
    withCleanup((cleanup) =>
      Effect.gen(function*() {
        yield* TestClock.setTime(Date.now())
        const root = tempDir(cleanup, "expiry-log-throws")
        const outside = tempDir(cleanup, "expiry-log-throws-outside")
        mkdirSync(join(root, "d"))
        let failures = 0
        const log: Log = (event) => {
          if (event !== "partial-expiry-failed") return
          failures++
          throw new Error("the log sink is broken")
        }
        const { send } = yield* serve(cleanup, root, { quotaBytes: 100, partialMaxAgeMs: maxAgeMs }, log)
        expect(yield* send("d/a.bin", 0, "a".repeat(60))).toBe(`{"TaskId":1,"DoneBytes":60}`)
        renameSync(join(root, "d"), join(root, "d-old"))
        symlinkSync(outside, join(root, "d"))
        yield* TestClock.adjust(maxAgeMs + maxAgeMs / 4 + 1000)
        yield* waitUntil(() => failures > 0, "the failed removal to be logged")
        rmSync(join(root, "d"))
        renameSync(join(root, "d-old"), join(root, "d"))
        // Before, the throw ended the sweep's fiber and the partial held its 60 bytes until a restart.
        yield* sweepUntilGone(join(root, "d", "a.bin.iip-part"), "the partial to be removed at a later sweep")
        expect(yield* send("b.bin", 0, "b".repeat(90))).toBe(`{"TaskId":1,"DoneBytes":90}`)
      })
    ))

  it.effect("an age of 0 is never, as the server's idle timeout: an unfinished upload is not removed between two of its requests", () =>
    withCleanup((cleanup) =>
      Effect.gen(function*() {
        yield* TestClock.setTime(Date.now())
        const root = tempDir(cleanup, "expiry-never")
        const { send } = yield* serve(cleanup, root, { partialMaxAgeMs: 0 })
        expect(yield* send("a.bin", 0, "a")).toBe(`{"TaskId":1,"DoneBytes":1}`)
        // Swept every millisecond, it went 2 ms after its last write.
        yield* TestClock.adjust(10)
        expect(yield* send("a.bin", 1, "b")).toBe(`{"TaskId":1,"DoneBytes":1}`)
        expect(readFileSync(join(root, "a.bin.iip-part"), "utf8")).toBe("ab")
      })
    ))
})

describe("unfinished uploads with the wall clock stepped", () => {
  const DAY_MS = 24 * HOUR_MS

  /** A file server on a Clock whose wall time the test steps, and a 60-byte partial of a.bin a sweep has seen written. */
  const servedWithPartial = (cleanup: Cleanup, name: string) =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const wall = steppedEffectClock(yield* Clock.clockWith(Effect.succeed))
      const root = tempDir(cleanup, name)
      const { send } = yield* serve(cleanup, root, { quotaBytes: 100, partialMaxAgeMs: maxAgeMs }).pipe(Effect.provideService(Clock.Clock, wall.clock))
      expect(yield* send("a.bin", 0, "a".repeat(60))).toBe(`{"TaskId":1,"DoneBytes":60}`)
      yield* TestClock.adjust(maxAgeMs / 4)
      return { wall, root, send }
    })

  it.effect("stepped forward a day: a partial written within the age is not removed, and resumes", () =>
    withCleanup((cleanup) =>
      Effect.gen(function*() {
        const { wall, root, send } = yield* servedWithPartial(cleanup, "expiry-step-forward")
        wall.step(DAY_MS)
        yield* TestClock.adjust(maxAgeMs / 4)
        // Had a sweep found it expired, its removal would have been queued in its turn ahead of this resume.
        expect(yield* send("a.bin", 60, "a")).toBe(`{"TaskId":1,"DoneBytes":1}`)
        expect(readFileSync(join(root, "a.bin.iip-part"), "utf8")).toBe("a".repeat(61))
      })
    ))

  it.effect("stepped back a day: an abandoned partial is still removed within a quarter of the age past it", () =>
    withCleanup((cleanup) =>
      Effect.gen(function*() {
        const { wall, root, send } = yield* servedWithPartial(cleanup, "expiry-step-back")
        wall.step(-DAY_MS)
        yield* TestClock.adjust(maxAgeMs + maxAgeMs / 4)
        yield* waitUntil(() => !existsSync(join(root, "a.bin.iip-part")), "the abandoned partial to be removed")
        expect(yield* send("b.bin", 0, "b".repeat(90))).toBe(`{"TaskId":1,"DoneBytes":90}`)
      })
    ))
})
