// The packet encoder's checks (src/protocol/packet.ts checkPacket): each bad packet is refused
// with its rule, also right after a good packet with the same path (checkPacket remembers the
// last good path to skip rescanning it; that must never let a bad path, status, channel or
// length through).
import { describe, expect, it } from "vitest"
import { Limits } from "../../src/protocol/constants.ts"
import { PacketEncodeError } from "../../src/protocol/errors.ts"
import { checkPacket, encodePacket } from "../../src/protocol/packet.ts"

const ruleOf = (f: () => unknown): string | undefined => {
  try {
    f()
    return undefined
  } catch (error) {
    expect(error).toBeInstanceOf(PacketEncodeError)
    return (error as PacketEncodeError).rule
  }
}

describe("checkPacket", () => {
  it("refuses bad packets by rule, before and after the same path passed", () => {
    for (let round = 0; round < 2; round++) {
      expect(checkPacket(1, "/ok", 3, 5)).toBe(Limits.packetOverhead + 3 + 5)
      expect(ruleOf(() => checkPacket(1, "/ok", -1, 5))).toBe("invalid-channel")
      expect(ruleOf(() => checkPacket(1, "/ok", Limits.maxChannelId + 1, 5))).toBe("invalid-channel")
      expect(ruleOf(() => checkPacket(99, "/ok", 3, 5))).toBe("invalid-status")
      expect(ruleOf(() => checkPacket(1, "/ok", 3, 0))).toBe("data-empty")
      expect(ruleOf(() => checkPacket(1, "/ok", 3, Limits.maxPacketData + 1))).toBe("data-too-long")
      expect(ruleOf(() => checkPacket(1, "", 3, 5))).toBe("path-empty")
      expect(ruleOf(() => checkPacket(1, "\0", 3, 5))).toBe("path-nul")
      expect(ruleOf(() => checkPacket(1, "/a\0b", 3, 5))).toBe("path-nul")
      expect(ruleOf(() => checkPacket(1, "/" + "x".repeat(Limits.maxSendPathBytes), 3, 5))).toBe("path-too-long")
    }
  })

  it("counts a path's UTF-8 bytes, also when it repeats", () => {
    for (let round = 0; round < 2; round++) expect(checkPacket(1, "/é", 1, 1)).toBe(Limits.packetOverhead + 3 + 1)
    expect(encodePacket(1, "/é", 1, Buffer.of(7)).length).toBe(Limits.packetOverhead + 3 + 1)
    expect(checkPacket(8, "", 0, 0)).toBe(Limits.packetOverhead) // a close packet has no path and no data
  })
})
