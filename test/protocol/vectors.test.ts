// Pins the codec to the bytes captured from the Go reference (iip-protocol.md §12.1-§12.5): each
// vector must encode to exactly its hex and decode back to its fields, and the system bodies of
// systemMessages.ts must equal the JSON inside those vectors byte for byte (Go's encoding/json).
import { describe, expect, it } from "vitest"
import { Status } from "../../src/protocol/constants.ts"
import { PacketDecoder } from "../../src/protocol/decoder.ts"
import type { ProtocolError } from "../../src/protocol/errors.ts"
import { encodePacket } from "../../src/protocol/packet.ts"
import { parseQuery, parseRequestPath } from "../../src/protocol/requestPath.ts"
import {
  goJsonString,
  handlerFailedBody,
  newChannelBody,
  noResponseBody,
  parseSystemAnswer,
  unknownPathBody
} from "../../src/protocol/systemMessages.ts"

interface Vector {
  readonly name: string
  readonly hex: string
  readonly status: number
  readonly path: string
  readonly channelId: number
  readonly data: Buffer
}

const text = (s: string) => Buffer.from(s, "utf8")
const hex = (s: string) => s.replace(/\s+/g, "")

const NEW_CHANNEL_1 = `{"code":0,"channel_id":1}`
const NEW_CHANNEL_2 = `{"code":0,"channel_id":2}`
const HANDLE_ERROR_102 = `{"code":102,"message":"handle error"}`
const HANDLER_FAIL_BOOM = `{"code":-1,"message":"handler fail:boom"}`
const NO_RESPONSE_101 = `{"code":101,"message":"handle no response"}`
const Q_ANSWER = `{"path":"/q","query":{"a":["1","2"],"b":["x y"]}}`
/** The 102 body of the `/nosuch` row, as hex: the `echo` row of §12.2 is cut short in the doc. */
const BODY_102_HEX = "7b22636f6465223a3130322c226d657373616765223a2268616e646c65206572726f72227d"

const vectors: ReadonlyArray<Vector> = [
  // §12.1 echo client session
  {
    name: "12.1 C->S new_channel",
    hex: "01 2f7379732f6e65775f6368616e6e656c 00 00000000 00000002 7b7d",
    status: 1,
    path: "/sys/new_channel",
    channelId: 0,
    data: text("{}")
  },
  {
    name: "12.1 S->C new_channel answer id 1",
    hex: "05 2f7379732f6e65775f6368616e6e656c 00 00000000 00000019 7b22636f6465223a302c226368616e6e656c5f6964223a317d",
    status: 5,
    path: "/sys/new_channel",
    channelId: 0,
    data: text(NEW_CHANNEL_1)
  },
  {
    name: "12.1 C->S /echo hello",
    hex: "01 2f6563686f 00 00000001 00000005 68656c6c6f",
    status: 1,
    path: "/echo",
    channelId: 1,
    data: text("hello")
  },
  {
    name: "12.1 S->C /echo hello",
    hex: "05 2f6563686f 00 00000001 00000005 68656c6c6f",
    status: 5,
    path: "/echo",
    channelId: 1,
    data: text("hello")
  },
  // §12.2 further server answers
  {
    name: "12.2 second new_channel answer id 2",
    hex: "052f7379732f6e65775f6368616e6e656c0000000000000000197b22636f6465223a302c226368616e6e656c5f6964223a327d",
    status: 5,
    path: "/sys/new_channel",
    channelId: 0,
    data: text(NEW_CHANNEL_2)
  },
  {
    name: "12.2 /echo hi0 on channel 0",
    hex: "052f6563686f000000000000000003686930",
    status: 5,
    path: "/echo",
    channelId: 0,
    data: text("hi0")
  },
  {
    name: "12.2 /nosuch -> 102",
    hex: "052f6e6f737563680000000001000000257b22636f6465223a3130322c226d657373616765223a2268616e646c65206572726f72227d",
    status: 5,
    path: "/nosuch",
    channelId: 1,
    data: text(HANDLE_ERROR_102)
  },
  {
    name: "12.2 /err -> -1 handler fail:boom",
    hex: "052f6572720000000001000000297b22636f6465223a2d312c226d657373616765223a2268616e646c6572206661696c3a626f6f6d227d",
    status: 5,
    path: "/err",
    channelId: 1,
    data: text(HANDLER_FAIL_BOOM)
  },
  {
    name: "12.2 /panic -> 101",
    hex: "052f70616e696300000000010000002b7b22636f6465223a3130312c226d657373616765223a2268616e646c65206e6f20726573706f6e7365227d",
    status: 5,
    path: "/panic",
    channelId: 1,
    data: text(NO_RESPONSE_101)
  },
  {
    name: "12.2 /q?a=1&b=x%20y&a=2 answered on /q",
    hex: "052f710000000001000000317b2270617468223a222f71222c227175657279223a7b2261223a5b2231222c2232225d2c2262223a5b22782079225d7d7d",
    status: 5,
    path: "/q",
    channelId: 1,
    data: text(Q_ANSWER)
  },
  {
    name: "12.2 /ec%68o answered as /echo",
    hex: "052f6563686f000000000100000003706374",
    status: 5,
    path: "/echo",
    channelId: 1,
    data: text("pct")
  },
  {
    name: "12.2 echo (no slash) -> 102 (body completed from the /nosuch row)",
    hex: "05 6563686f 00 00000001 00000025" + BODY_102_HEX,
    status: 5,
    path: "echo",
    channelId: 1,
    data: text(HANDLE_ERROR_102)
  },
  {
    name: "12.2 two requests in one write: A",
    hex: "052f6563686f00000000010000000141",
    status: 5,
    path: "/echo",
    channelId: 1,
    data: text("A")
  },
  {
    name: "12.2 two requests in one write: B",
    hex: "052f6563686f00000000010000000142",
    status: 5,
    path: "/echo",
    channelId: 1,
    data: text("B")
  },
  {
    name: "12.2 status 0 then 3 -> one answer ABCD",
    hex: "052f6563686f00000000010000000441424344",
    status: 5,
    path: "/echo",
    channelId: 1,
    data: text("ABCD")
  },
  // §12.4 channel-id divergence run (complete rows only)
  {
    name: "12.4 C->S /echo on-A on 1",
    hex: "012f6563686f0000000001000000046f6e2d41",
    status: 1,
    path: "/echo",
    channelId: 1,
    data: text("on-A")
  },
  {
    name: "12.4 S->C /echo on-B on 1",
    hex: "052f6563686f0000000001000000046f6e2d42",
    status: 5,
    path: "/echo",
    channelId: 1,
    data: text("on-B")
  },
  // §12.5 upper-protocol vectors (the rows whose bytes are complete)
  {
    name: "12.5 download final answer",
    hex: "052f646f776e6c6f61645f66696c65000000000100000004 00000001",
    status: 5,
    path: "/download_file",
    channelId: 1,
    data: Buffer.from([0, 0, 0, 1])
  },
  {
    name: "12.5 upload answer",
    hex: "052f75706c6f61645f66696c6500000000010000001e" + text(`{"TaskId":1,"DoneBytes":25000}`).toString("hex"),
    status: 5,
    path: "/upload_file",
    channelId: 1,
    data: text(`{"TaskId":1,"DoneBytes":25000}`)
  }
]

interface Decoded {
  readonly status: number
  readonly path: string
  readonly channelId: number
  readonly data: string
}

const decodeAll = (chunks: ReadonlyArray<Buffer>) => {
  const packets: Array<Decoded> = []
  const decoder = new PacketDecoder({
    checkHeader: () => undefined,
    onPacket: (status, path, channelId, data) =>
      packets.push({ status, path, channelId, data: Buffer.from(data).toString("hex") })
  })
  const results = chunks.map((chunk) => decoder.push(chunk))
  return { packets, results, idle: decoder.idle }
}

const fields = (v: Vector): Decoded => ({
  status: v.status,
  path: v.path,
  channelId: v.channelId,
  data: v.data.toString("hex")
})

describe("reference byte vectors (§12)", () => {
  describe.each(vectors)("$name", (v) => {
    it("encodes to the captured bytes", () => {
      expect(encodePacket(v.status, v.path, v.channelId, v.data).toString("hex")).toBe(hex(v.hex))
    })

    it("decodes to its fields", () => {
      const { packets, results, idle } = decodeAll([Buffer.from(hex(v.hex), "hex")])
      expect(results).toStrictEqual([undefined])
      expect(packets).toStrictEqual([fields(v)])
      expect(idle).toBe(true)
    })
  })

  it("the whole set decodes as one stream, in one chunk and byte by byte", () => {
    const stream = Buffer.from(vectors.map((v) => hex(v.hex)).join(""), "hex")
    const expected = vectors.map(fields)
    expect(decodeAll([stream]).packets).toStrictEqual(expected)
    const bytes = Array.from(stream, (_, i) => stream.subarray(i, i + 1))
    const byByte = decodeAll(bytes)
    expect(byByte.packets).toStrictEqual(expected)
    expect(byByte.results.every((r) => r === undefined)).toBe(true)
  })

  it("12.1 without spaces equals the spaced rows", () => {
    const joined = [
      "012f7379732f6e65775f6368616e6e656c0000000000000000027b7d",
      "052f7379732f6e65775f6368616e6e656c0000000000000000197b22636f6465223a302c226368616e6e656c5f6964223a317d",
      "012f6563686f00000000010000000568656c6c6f",
      "052f6563686f00000000010000000568656c6c6f"
    ]
    expect(vectors.slice(0, 4).map((v) => hex(v.hex))).toStrictEqual(joined)
  })

  describe("12.3 codec vector: status 8, /testpath, chan 1234, 'test data'", () => {
    const bytes = hex("08 2f7465737470617468 00 000004d2 00000009 746573742064617461")

    it("encodes to the reference's bytes", () => {
      expect(encodePacket(Status.Close, "/testpath", 1234, text("test data")).toString("hex")).toBe(bytes)
    })

    it("a live decoder closes at the first byte and delivers nothing", () => {
      const { packets, results } = decodeAll([Buffer.from(bytes, "hex")])
      expect(results).toStrictEqual(["close"])
      expect(packets).toStrictEqual([])
    })
  })

  describe("12.2 requests the reference closes the connection on", () => {
    const rejected = (hexBytes: string) => {
      const { packets, results } = decodeAll([Buffer.from(hex(hexBytes), "hex")])
      expect(packets).toStrictEqual([])
      expect(results).toHaveLength(1)
      return results[0] as ProtocolError
    }

    it("length 0: 012f6563686f000000000100000000", () => {
      expect(rejected("012f6563686f000000000100000000").rule).toBe("length-zero")
      expect(() => encodePacket(1, "/echo", 1, new Uint8Array(0))).toThrow(expect.objectContaining({ rule: "data-empty" }))
    })

    it("length 0x01000001 (16 MiB + 1), header only", () => {
      expect(rejected("012f6563686f0000000001 01000001").rule).toBe("length-too-large")
    })

    it("empty path: 01 00 00000001 00000001 78", () => {
      expect(rejected("01 00 00000001 00000001 78").rule).toBe("path-empty")
      expect(() => encodePacket(1, "", 1, text("x"))).toThrow(expect.objectContaining({ rule: "path-empty" }))
    })

    it("first byte 08", () => {
      expect(decodeAll([Buffer.from([0x08])]).results).toStrictEqual(["close"])
    })

    it("status 09", () => {
      expect(rejected("09 2f6563686f 00 00000001 00000001 78").rule).toBe("invalid-status")
    })
  })
})

describe("system bodies equal the reference's JSON (§4.2, §5)", () => {
  it.each([
    ["new_channel id 1", newChannelBody(1), NEW_CHANNEL_1],
    ["new_channel id 2", newChannelBody(2), NEW_CHANNEL_2],
    ["102 handle error", unknownPathBody, HANDLE_ERROR_102],
    ["-1 handler fail:boom", handlerFailedBody("boom"), HANDLER_FAIL_BOOM],
    ["101 handle no response", noResponseBody, NO_RESPONSE_101]
  ])("%s", (_name, body, json) => {
    expect(body.toString("hex")).toBe(text(json).toString("hex"))
  })

  it("the bodies are the data of the captured answer packets", () => {
    const dataOf = (name: string) => vectors.find((v) => v.name === name)!.data
    expect(newChannelBody(1).equals(dataOf("12.1 S->C new_channel answer id 1"))).toBe(true)
    expect(newChannelBody(2).equals(dataOf("12.2 second new_channel answer id 2"))).toBe(true)
    expect(unknownPathBody.equals(dataOf("12.2 /nosuch -> 102"))).toBe(true)
    expect(handlerFailedBody("boom").equals(dataOf("12.2 /err -> -1 handler fail:boom"))).toBe(true)
    expect(noResponseBody.equals(dataOf("12.2 /panic -> 101"))).toBe(true)
    expect(BODY_102_HEX).toBe(unknownPathBody.toString("hex"))
  })

  it("parseSystemAnswer reads them back", () => {
    expect(parseSystemAnswer(newChannelBody(2))).toStrictEqual({ code: 0, message: "", channelId: 2 })
    expect(parseSystemAnswer(unknownPathBody)).toStrictEqual({ code: 102, message: "handle error", channelId: 0 })
    expect(parseSystemAnswer(handlerFailedBody("boom"))).toStrictEqual({
      code: -1,
      message: "handler fail:boom",
      channelId: 0
    })
    expect(parseSystemAnswer(text("hello"))).toBeUndefined()
  })

  it("Go's encoding/json escapes <, > and & (and U+2028/U+2029)", () => {
    expect(goJsonString("a<b>&c")).toBe("\"a\\u003cb\\u003e\\u0026c\"")
    expect(goJsonString("\u2028\u2029")).toBe("\"\\u2028\\u2029\"")
    expect(handlerFailedBody("<x>").toString("utf8")).toBe(`{"code":-1,"message":"handler fail:\\u003cx\\u003e"}`)
  })

  it("the /q answer is the parsed path and query of /q?a=1&b=x%20y&a=2", () => {
    const parsed = parseRequestPath("/q?a=1&b=x%20y&a=2")
    const json = JSON.stringify({ path: parsed.path, query: Object.fromEntries(parseQuery(parsed.rawQuery)) })
    expect(json).toBe(Q_ANSWER)
  })
})
