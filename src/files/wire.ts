// The bytes of the file-transfer upper protocols (iip-protocol.md §11.2, §11.3) and of our one
// extension, `/file_checksum`: what the client (download.ts, upload.ts) sends and the server
// (server.ts) answers, as the Go examples write them. JSON goes out the way Go's encoding/json
// writes these structs (field order, escapes) and is read strictly, every length bounded. Pure.
import * as Data from "effect/Data"
import { goJsonString, parseSystemAnswer, type SystemAnswer } from "../protocol/systemMessages.ts"

export const FilePath = {
  download: "/download_file",
  upload: "/upload_file",
  /** Ours, not the reference's: a plain IIP server without it answers 102 (unknown path). */
  checksum: "/file_checksum"
} as const

/** File bytes per download answer: the Go server's 10,240-byte buffer minus its 4-byte flag. */
export const downloadChunkBytes = 10_236
/** The flag that opens every download answer: more may follow, or the end of the file. */
export const DownloadFlag = { more: 0, end: 1 } as const
/** The Go upload client sends up to 10 MiB a request; we send 1 MiB, and accept up to a packet. */
export const uploadChunkBytes = 1024 * 1024
/** Longest JSON part of any request of these protocols (a 1 KiB path, escaped, fits). */
export const maxRequestJsonBytes = 8192
/** Longest answer that is JSON (upload and checksum answers, error bodies). */
export const maxAnswerJsonBytes = 4096

/** A request the server cannot read; its message goes back in the handler-fail body. */
export class FileRequestInvalid extends Data.TaggedError("FileRequestInvalid")<{ readonly message: string }> {}

export interface DownloadRequest {
  readonly filePath: string
  readonly start: number
}

export interface UploadRequest {
  /** The int64 as written, echoed back exactly (a JavaScript number would round it). */
  readonly taskId: string
  readonly filePath: string
  readonly start: number
  readonly completed: boolean
  readonly content: Buffer
}

export interface ChecksumRequest {
  readonly filePath: string
  /** The server's unfinished upload of `filePath` instead of the file itself. */
  readonly upload: boolean
  /** Hash only the first `length` bytes; undefined for the whole file. */
  readonly length: number | undefined
}

export interface ChecksumAnswer {
  /** Size of the file (or of the unfinished upload, 0 when there is none). */
  readonly size: number
  /** Bytes hashed: min(length asked, size). */
  readonly length: number
  readonly sha256: string
}

// ---- client side: requests out, answers in ----

export const encodeDownloadRequest = (taskId: number, filePath: string, start: number): Buffer =>
  Buffer.from(`{"TaskId":${taskId},"FilePath":${goJsonString(filePath)},"DownloadStartPos":${start}}`, "utf8")

/** 4-byte big-endian length of the JSON header, the header, then the content. */
export const encodeUploadRequest = (taskId: number, filePath: string, start: number, completed: boolean, content: Uint8Array): Buffer => {
  const header = Buffer.from(`{"TaskId":${taskId},"FilePath":${goJsonString(filePath)},"UploadStartPos":${start},"Completed":${completed}}`, "utf8")
  const out = Buffer.allocUnsafe(4 + header.length + content.length)
  out.writeUInt32BE(header.length, 0)
  header.copy(out, 4)
  out.set(content, 4 + header.length)
  return out
}

export const encodeChecksumRequest = (request: ChecksumRequest): Buffer =>
  Buffer.from(
    `{"FilePath":${goJsonString(request.filePath)},"Upload":${request.upload}${request.length === undefined ? "" : `,"Length":${request.length}`}}`,
    "utf8"
  )

/** What an answer turned out to be when it is not the expected shape. */
export type AnswerProblem = { readonly _tag: "ServerError"; readonly answer: SystemAnswer } | { readonly _tag: "Malformed"; readonly message: string }

const serverErrorOr = (data: Buffer, message: string): AnswerProblem => {
  const answer = data.length <= maxAnswerJsonBytes ? parseSystemAnswer(data) : undefined
  return answer !== undefined ? { _tag: "ServerError", answer } : { _tag: "Malformed", message }
}

/**
 * A download answer: flag 0 and at most 10,236 bytes, or flag 1 (end; the Go client keeps any
 * bytes that come with it, so do we). Any other flag is not file data: the reference's file_client appends it and
 * asks again forever; we read it as the server's error body.
 */
export const decodeDownloadAnswer = (data: Buffer): { readonly end: boolean; readonly bytes: Buffer } | AnswerProblem => {
  const flag = data.length >= 4 ? data.readUInt32BE(0) : -1
  if (flag === DownloadFlag.more || flag === DownloadFlag.end) {
    // No server of this protocol sends more (the Go one reads into a 10,240-byte buffer): a bound on what one answer may add.
    if (data.length > 4 + downloadChunkBytes) return { _tag: "Malformed", message: `a download answer of ${data.length} bytes, more than a flag and ${downloadChunkBytes} bytes` }
    return { end: flag === DownloadFlag.end, bytes: data.subarray(4) }
  }
  return serverErrorOr(data, `a download answer of ${data.length} bytes that starts with neither flag 0 nor 1`)
}

/** `{"TaskId":N,"DoneBytes":N}`: the bytes the server wrote, at most `sent`. */
export const decodeUploadAnswer = (data: Buffer, sent: number): number | AnswerProblem => {
  const json = data.length <= maxAnswerJsonBytes ? readJsonObject(data) : undefined
  const done = json?.value.DoneBytes
  if (json === undefined || "code" in json.value || typeof done !== "number" || !Number.isSafeInteger(done) || done < 0 || done > sent) {
    return serverErrorOr(data, `an upload answer that is not {"TaskId":N,"DoneBytes":0..${sent}}`)
  }
  return done
}

export const decodeChecksumAnswer = (data: Buffer): ChecksumAnswer | AnswerProblem => {
  const json = data.length <= maxAnswerJsonBytes ? readJsonObject(data) : undefined
  const { Size: size, Length: length, Sha256: sha256 } = json?.value ?? {}
  const isCount = (n: unknown): n is number => typeof n === "number" && Number.isSafeInteger(n) && n >= 0
  if (json === undefined || !isCount(size) || !isCount(length) || length > size || typeof sha256 !== "string" || !/^[0-9a-f]{64}$/.test(sha256)) {
    return serverErrorOr(data, "a checksum answer that is not {\"Size\":N,\"Length\":N,\"Sha256\":\"hex\"}")
  }
  return { size, length, sha256 }
}

// ---- server side: requests in, answers out ----

export const encodeUploadAnswer = (taskId: string, doneBytes: number): Buffer => Buffer.from(`{"TaskId":${taskId},"DoneBytes":${doneBytes}}`, "utf8")

export const encodeChecksumAnswer = (answer: ChecksumAnswer): Buffer =>
  Buffer.from(`{"Size":${answer.size},"Length":${answer.length},"Sha256":"${answer.sha256}"}`, "utf8")

export const decodeDownloadRequest = (data: Buffer): DownloadRequest => {
  const json = requestJson(data, "download")
  return { filePath: stringField(json, "FilePath"), start: countField(json, "DownloadStartPos") }
}

export const decodeUploadRequest = (data: Buffer): UploadRequest => {
  // The Go server refuses 4 bytes or fewer before reading anything.
  if (data.length <= 4) throw new FileRequestInvalid({ message: `an upload request of ${data.length} bytes` })
  const headerBytes = data.readUInt32BE(0)
  if (headerBytes > maxRequestJsonBytes || 4 + headerBytes > data.length) {
    throw new FileRequestInvalid({ message: `an upload header of ${headerBytes} bytes in a request of ${data.length}` })
  }
  const json = requestJson(data.subarray(4, 4 + headerBytes), "upload")
  const completed = json.value.Completed ?? false
  if (typeof completed !== "boolean") throw new FileRequestInvalid({ message: "Completed must be true or false" })
  return {
    taskId: int64Field(json, "TaskId"),
    filePath: stringField(json, "FilePath"),
    start: countField(json, "UploadStartPos"),
    completed,
    content: data.subarray(4 + headerBytes)
  }
}

export const decodeChecksumRequest = (data: Buffer): ChecksumRequest => {
  const json = requestJson(data, "checksum")
  const upload = json.value.Upload ?? false
  if (typeof upload !== "boolean") throw new FileRequestInvalid({ message: "Upload must be true or false" })
  return { filePath: stringField(json, "FilePath"), upload, length: json.value.Length === undefined ? undefined : countField(json, "Length") }
}

// ---- strict JSON reading ----

interface JsonObject {
  readonly value: Record<string, unknown>
  /** The source text of each top-level number, to check integers the way Go's decoder does. */
  readonly sources: ReadonlyMap<string, string>
}

const readJsonObject = (data: Buffer): JsonObject | undefined => {
  const sources = new Map<object, Map<string, string>>()
  // Node 24's JSON.parse hands revivers the source text of primitives (JSON.parse source text access).
  function reviver(this: object, key: string, value: unknown, context?: { readonly source?: string }): unknown {
    if (context?.source !== undefined) {
      const own = sources.get(this) ?? new Map<string, string>()
      sources.set(this, own.set(key, context.source))
    }
    return value
  }
  try {
    const value: unknown = JSON.parse(data.toString("utf8"), reviver)
    if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined
    return { value: value as Record<string, unknown>, sources: sources.get(value) ?? new Map() }
  } catch {
    return undefined
  }
}

const requestJson = (data: Buffer, what: string): JsonObject => {
  if (data.length > maxRequestJsonBytes) throw new FileRequestInvalid({ message: `a ${what} request of ${data.length} bytes (at most ${maxRequestJsonBytes})` })
  const json = readJsonObject(data)
  if (json === undefined) throw new FileRequestInvalid({ message: `a ${what} request that is not a JSON object` })
  return json
}

/** A missing field is Go's zero value, as json.Unmarshal leaves it. */
const stringField = (json: JsonObject, key: string): string => {
  const value = json.value[key] ?? ""
  if (typeof value !== "string") throw new FileRequestInvalid({ message: `${key} must be a string` })
  return value
}

const countField = (json: JsonObject, key: string): number => {
  const value = json.value[key] ?? 0
  const source = json.sources.get(key) ?? "0"
  if (typeof value !== "number" || !/^\d+$/.test(source) || !Number.isSafeInteger(value)) {
    throw new FileRequestInvalid({ message: `${key} must be a whole number from 0 to ${Number.MAX_SAFE_INTEGER}` })
  }
  return value
}

const int64Field = (json: JsonObject, key: string): string => {
  const source = json.sources.get(key) ?? "0"
  const ok = typeof (json.value[key] ?? 0) === "number" && /^-?\d{1,19}$/.test(source) && BigInt.asIntN(64, BigInt(source)) === BigInt(source)
  if (!ok) throw new FileRequestInvalid({ message: `${key} must be a 64-bit integer` })
  return BigInt(source).toString()
}
