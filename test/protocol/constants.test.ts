// Pins the wire constants of src/protocol/constants.ts to the values of iip-protocol.md §2.1, §2.2,
// §2.4, §4 and §5 (the reference's consts.go and variants.go). A change here breaks the wire.
import { describe, expect, it } from "vitest"
import {
  EmptyBody,
  ErrorCode,
  Limits,
  Status,
  StatusNone,
  SystemChannel,
  SystemPath
} from "../../src/protocol/constants.ts"

describe("protocol constants", () => {
  it("status bytes 0..8 (§2.1)", () => {
    expect(Status).toStrictEqual({
      RequestFirstMore: 0,
      RequestWhole: 1,
      RequestContinue: 2,
      RequestLast: 3,
      ResponseFirstMore: 4,
      ResponseWhole: 5,
      ResponseContinue: 6,
      ResponseLast: 7,
      Close: 8
    })
  })

  it("'no packet yet' channel status is 255 (§4.4)", () => {
    expect(StatusNone).toBe(255)
  })

  it("limits (§2.2, §2.4)", () => {
    expect(Limits.maxSendPathBytes).toBe(2048)
    expect(Limits.maxPacketData).toBe(16 * 1024 * 1024)
    expect(Limits.maxPacketData).toBe(16_777_216)
    expect(Limits.minPacketData).toBe(1)
    expect(Limits.packetOverhead).toBe(10) // status 1 + NUL 1 + channel 4 + length 4
    expect(Limits.maxChannelId).toBe(0xffff_ffff)
    // Our own receive bound: at least the send limit, below the reference's 512 KiB read buffer.
    expect(Limits.maxReceivePathBytes).toBe(64 * 1024)
  })

  it("system channel and paths (§4.1, §4.2)", () => {
    expect(SystemChannel).toBe(0)
    expect(SystemPath).toStrictEqual({
      newChannel: "/sys/new_channel",
      deleteChannel: "/sys/delete_channel"
    })
  })

  it("error codes (§5, variants.go)", () => {
    expect(ErrorCode).toStrictEqual({
      handlerFailed: -1,
      packetUncompleted: 100,
      handleNoResponse: 101,
      handleError: 102,
      requestTimeout: 103,
      unknown: 104,
      responseHandlerNotImplemented: 105,
      channelCreateLimited: 106,
      serverConnectionsLimited: 107,
      clientConnectionsLimited: 108
    })
  })

  it("the empty-body replacement is the two bytes {} (§2.4)", () => {
    expect(Array.from(EmptyBody)).toStrictEqual([0x7b, 0x7d])
    expect(Buffer.from(EmptyBody).toString("utf8")).toBe("{}")
  })
})
