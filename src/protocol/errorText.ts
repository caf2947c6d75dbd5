// A typed error's code and message come from the far side (PROTOCOL.md §14): before either reaches
// an HTTP header, a log line or a metric label, the code is reduced to token characters and both
// are clamped, so a peer cannot inject a header, break a writer (node throws on CR, LF or a
// character above Latin-1 in a header) or grow a label set with megabytes of text. Pure.

const CODE_MAX = 64
const MESSAGE_MAX = 1024

/** An error code as it may be written anywhere: [A-Za-z0-9_.-], at most 64 characters, never empty. */
export const safeErrorCode = (code: string): string => {
  const clamped = code.length > CODE_MAX ? code.slice(0, CODE_MAX) : code
  const safe = clamped.replace(/[^A-Za-z0-9_.-]/g, "_")
  return safe === "" ? "unknown" : safe
}

/** An error message clamped to 1 KiB of characters (the writer escapes it: JSON, a log's encoder). */
export const clampErrorMessage = (message: string): string => (message.length > MESSAGE_MAX ? `${message.slice(0, MESSAGE_MAX)}...` : message)
