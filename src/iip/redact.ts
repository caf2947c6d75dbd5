// Values from outside (environment variables, request paths, error messages) made safe to show in a
// log line or an admin view: `quoted` and `loggable` escape what could forge or hide log lines
// (control characters, C1 controls, line and paragraph separators, bidi overrides, lone surrogates)
// and clamp the length; `redactUrl` blanks the credentials a URL may carry. Pure.

/** Longest value shown by default, in UTF-16 code units. */
const DEFAULT_MAX_CHARS = 200

/**
 * What JSON.stringify leaves as it is but a terminal or log viewer may act on: DEL and the C1
 * controls, U+2028/U+2029 (line breaks to JavaScript and some viewers) and the bidi controls.
 */
const INVISIBLE = /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g

/** `text` cut to about `maxChars` (UTF-16 code units), saying how much more there was; nothing escaped. */
export const clamp = (text: string, maxChars: number): string => {
  if (text.length <= maxChars) return text
  // Never cut a surrogate pair in two.
  const end = /[\ud800-\udbff]/.test(text[maxChars - 1] ?? "") ? maxChars - 1 : maxChars
  return `${text.slice(0, end)}...(${text.length - end} more)`
}

/**
 * `text` as a JSON string literal, at most about `maxChars` long: C0 controls, quotes and
 * backslashes escaped as JSON escapes them, and the characters above as \uXXXX.
 */
export const quoted = (text: string, maxChars = DEFAULT_MAX_CHARS): string => escapeInvisible(JSON.stringify(clamp(text, maxChars)))

/** INVISIBLE without its global flag: a test that keeps no lastIndex between calls. */
const hasInvisible = new RegExp(INVISIBLE.source)

/** JSON text (JSON.stringify's) with the characters of INVISIBLE as \uXXXX escapes: the same value, none of them raw. */
export const escapeInvisible = (json: string): string =>
  hasInvisible.test(json) ? json.replace(INVISIBLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`) : json

/** C0 controls and the characters of INVISIBLE: what `printable` escapes. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g

/**
 * A peer's message that goes to a terminal as part of our own: `text` as it is, quotes included,
 * but every control (escape sequences, carriage returns, newlines) and the characters above as
 * \uXXXX, clamped to about `maxChars`.
 */
export const printable = (text: string, maxChars = DEFAULT_MAX_CHARS): string =>
  clamp(text, maxChars).replace(CONTROL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)

/** `quoted` without its quotes: for a value that is a field of a JSON log line or part of a message. */
export const loggable = (text: string, maxChars = DEFAULT_MAX_CHARS): string => quoted(text, maxChars).slice(1, -1)

/** A query parameter whose name says it holds a credential. */
const SECRET_NAME = /token|key|secret|pass|pwd|auth|sig|credential|session|cookie/i

/**
 * `url` with its userinfo (`user:password@`), the values of query parameters named like
 * credentials (token, api_key, password, sig, ...) and its fragment replaced by `***`. Works on
 * text that is not a valid URL too (what an environment variable held), without re-encoding the rest.
 */
export const redactUrl = (url: string): string =>
  url
    .replace(/^((?:[^:/?#]*:)?\/\/)?([^/?#]*@)/, (_all, scheme: string | undefined) => `${scheme ?? ""}***@`)
    .replace(/([?&;])([^=&;#]*)=([^&;#]*)/g, (all, separator: string, name: string) => (SECRET_NAME.test(decodeOr(name)) ? `${separator}${name}=***` : all))
    .replace(/#.+$/, "#***")

const decodeOr = (text: string): string => {
  try {
    return decodeURIComponent(text)
  } catch {
    return text
  }
}
