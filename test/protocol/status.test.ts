// Pins the per-channel status state machine (iip-protocol.md §4.4, protocol.go:163-198): which
// status a server accepts from a client and a client from a server, given the channel's previous
// received status (255 = none). The expected table below is written out from the spec, not derived
// from the code under test.
import { describe, expect, it } from "vitest"
import { StatusNone } from "../../src/protocol/constants.ts"
import { isFirstPacket, isLastPacket, type Role, statusAllowed } from "../../src/protocol/status.ts"

/** The statuses a channel can have last received at each role (anything else was refused). */
const reachablePrev: Record<Role, ReadonlyArray<number>> = {
  server: [StatusNone, 0, 1, 2, 3],
  client: [StatusNone, 4, 5, 6, 7]
}

/** §4.4: first packets need no message in progress, continuations need one; other statuses never pass. */
const expected = (role: Role, prev: number, status: number): boolean => {
  const [first, firstWhole, more, last] = role === "server" ? [0, 1, 2, 3] : [4, 5, 6, 7]
  if (status === first || status === firstWhole) return prev === StatusNone || prev === firstWhole || prev === last
  if (status === more || status === last) return prev === first || prev === more
  // The other direction's statuses, 9 and above, and 8 (which the decoder turns into a close
  // before the state machine is asked; the reference lets 8 pass its check for the same reason).
  return false
}

/** Walks a sequence on one channel; returns the index of the first refused status, or -1. */
const firstRefused = (role: Role, statuses: ReadonlyArray<number>): number => {
  let prev: number = StatusNone
  for (let i = 0; i < statuses.length; i++) {
    if (!statusAllowed(role, prev, statuses[i]!)) return i
    prev = statuses[i]!
  }
  return -1
}

const ALL_STATUSES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 127, 254, 255]

describe("statusAllowed", () => {
  describe.each(["server", "client"] as const)("%s role: the full table", (role) => {
    it.each(reachablePrev[role])("prev %i", (prev) => {
      const row = ALL_STATUSES.map((status) => [status, statusAllowed(role, prev, status)])
      expect(row).toStrictEqual(ALL_STATUSES.map((status) => [status, expected(role, prev, status)]))
    })
  })

  it("server: the table spelled out", () => {
    const allowedStatuses = (prev: number) => ALL_STATUSES.filter((s) => statusAllowed("server", prev, s))
    expect(allowedStatuses(StatusNone)).toStrictEqual([0, 1])
    expect(allowedStatuses(0)).toStrictEqual([2, 3])
    expect(allowedStatuses(1)).toStrictEqual([0, 1])
    expect(allowedStatuses(2)).toStrictEqual([2, 3])
    expect(allowedStatuses(3)).toStrictEqual([0, 1])
  })

  it("client: the table spelled out", () => {
    const allowedStatuses = (prev: number) => ALL_STATUSES.filter((s) => statusAllowed("client", prev, s))
    expect(allowedStatuses(StatusNone)).toStrictEqual([4, 5])
    expect(allowedStatuses(4)).toStrictEqual([6, 7])
    expect(allowedStatuses(5)).toStrictEqual([4, 5])
    expect(allowedStatuses(6)).toStrictEqual([6, 7])
    expect(allowedStatuses(7)).toStrictEqual([4, 5])
  })

  describe("server: the verified sequences of §4.4 and §12.2", () => {
    it.each([
      ["1", [1], -1],
      ["1, 1, 1 (one-packet requests)", [1, 1, 1], -1],
      ["0, 2, 3 (three-packet request)", [0, 2, 3], -1],
      ["0, 3 then a new 1", [0, 3, 1], -1],
      ["0, 2, 2, 3, 0, 3", [0, 2, 2, 3, 0, 3], -1],
      ["0 then 1: 'prev status: 0, current 1'", [0, 1], 1],
      ["0 then 0", [0, 0], 1],
      ["2 first: 'prev status: 255, current 2'", [2], 0],
      ["3 first", [3], 0],
      ["1 then 3", [1, 3], 1],
      ["0, 3, 3", [0, 3, 3], 2],
      ["4 to a server", [4], 0],
      ["5 to a server", [5], 0],
      ["9", [9], 0],
      ["1 then 9", [1, 9], 1]
    ] as const)("%s", (_name, statuses, refusedAt) => {
      expect(firstRefused("server", statuses)).toBe(refusedAt)
    })
  })

  describe("client: the same rules with 4/5 and 6/7", () => {
    it.each([
      ["5, 5", [5, 5], -1],
      ["4, 6, 7", [4, 6, 7], -1],
      ["4, 7, 5", [4, 7, 5], -1],
      ["4 then 5", [4, 5], 1],
      ["6 first", [6], 0],
      ["7 first", [7], 0],
      ["5 then 7", [5, 7], 1],
      ["1 to a client", [1], 0],
      ["0 to a client", [0], 0],
      ["9", [9], 0]
    ] as const)("%s", (_name, statuses, refusedAt) => {
      expect(firstRefused("client", statuses)).toBe(refusedAt)
    })
  })
})

describe("isFirstPacket / isLastPacket", () => {
  it("first packets are 0, 1, 4, 5; last packets are 1, 3, 5, 7; 8 is neither", () => {
    const range = [0, 1, 2, 3, 4, 5, 6, 7, 8]
    expect(range.filter(isFirstPacket)).toStrictEqual([0, 1, 4, 5])
    expect(range.filter(isLastPacket)).toStrictEqual([1, 3, 5, 7])
  })
})
