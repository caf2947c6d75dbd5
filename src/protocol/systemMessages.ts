// The JSON bodies of the reference's system answers and in-band errors (PROTOCOL.md §4.2, §5),
// byte for byte as Go's encoding/json writes them. Pure.
import { ErrorCode } from "./constants.ts"

/**
 * JSON string literal the way Go 1.19's encoding/json writes it: HTML-safe escapes, \b and \f as
 * \u0008 and \u000c, and a lone surrogate as U+FFFD.
 */
export const goJsonString = (s: string): string =>
  JSON.stringify(s).replace(/\\u[dD][89a-fA-F][0-9a-fA-F]{2}|\\[\s\S]|[<>&\u2028\u2029]/g, (m) =>
    m.length === 6
      ? "\\ufffd"
      : m === "\\b"
      ? "\\u0008"
      : m === "\\f"
      ? "\\u000c"
      : m.length === 2
      ? m
      : `\\u${m.charCodeAt(0).toString(16).padStart(4, "0")}`
  )

/** `{"code":N,"message":"..."}` with the reference's field order; empty message and zero id omitted. */
export const systemBody = (code: number, message: string, channelId = 0): Buffer => {
  let json = `{"code":${code}`
  if (message !== "") json += `,"message":${goJsonString(message)}`
  if (channelId !== 0) json += `,"channel_id":${channelId}`
  return Buffer.from(json + "}", "utf8")
}

/** The answer to an unknown path. */
export const unknownPathBody: Buffer = systemBody(ErrorCode.handleError, "handle error")
/** The answer to a handler that crashed or returned nothing. */
export const noResponseBody: Buffer = systemBody(ErrorCode.handleNoResponse, "handle no response")
/** The answer to a handler that failed with `message`. */
export const handlerFailedBody = (message: string): Buffer => systemBody(ErrorCode.handlerFailed, `handler fail:${message}`)
/** The answer to `/sys/new_channel`. */
export const newChannelBody = (channelId: number): Buffer => systemBody(0, "", channelId)
/** The refusal of `/sys/new_channel` when the connection has all the channels it may have. */
export const channelLimitBody: Buffer = systemBody(ErrorCode.channelCreateLimited, "channel create limited")

export interface SystemAnswer {
  readonly code: number
  readonly message: string
  readonly channelId: number
}

/** The bytes as a JSON object; undefined when they are not one. */
export const parseJsonObject = (data: Uint8Array): Record<string, unknown> | undefined => {
  try {
    const value: unknown = JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("utf8"))
    return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}

/** Reads a system answer; undefined when the bytes are not one. */
export const parseSystemAnswer = (data: Uint8Array): SystemAnswer | undefined => {
  const record = parseJsonObject(data)
  if (record === undefined || typeof record.code !== "number") return undefined
  return {
    code: record.code,
    message: typeof record.message === "string" ? record.message : "",
    channelId: typeof record.channel_id === "number" ? record.channel_id : 0
  }
}
