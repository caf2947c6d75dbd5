// Reading a small file that another process wrote (the local directory's announcements, the
// endpoints file, the sidecar's config file), without trusting what sits at the path: it is opened without blocking (a FIFO
// with no writer would block the open, and the event loop, for good), then checked on the open
// descriptor (a regular file, not a device or FIFO whose read never ends, of at most `maxBytes`),
// so a swap between the check and the read changes nothing. readSmallFileAsync does the same off
// the event loop (libuv's threads), for files read while the sidecar serves (the --trust-bundle
// file, read on every call to the issuer; the issuer's own ServiceAccount token, read on every
// TokenReview).
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from "node:fs"
import { open } from "node:fs/promises"

/** A secret file (a token: a ServiceAccount JWT is a few KiB) larger than this is refused unread. */
export const MAX_SECRET_FILE_BYTES = 64 * 1024

/** This version of the file (inode, size, mtime) and its text, or why it is not read. */
export type SmallFile =
  | { readonly version: string; readonly text: string }
  | { readonly version: string; readonly problem: string }

/**
 * The file at `path`, if it is a regular file of at most `maxBytes`. Without `followSymlink` a
 * symlink is not followed (its target's text cannot reach a log). Errors of the open (ENOENT,
 * EACCES) are thrown as they are.
 */
export const readSmallFile = (path: string, maxBytes: number, options: { readonly followSymlink: boolean }): SmallFile => {
  let fd: number
  try {
    fd = openSync(path, openFlags(options))
  } catch (error) {
    return notFollowed(error, options)
  }
  try {
    const stat = fstatSync(fd)
    const refused = refusal(stat, maxBytes)
    if (refused !== undefined) return refused
    const buffer = Buffer.alloc(stat.size)
    const length = readSync(fd, buffer, 0, buffer.length, 0)
    return { version: versionOf(stat), text: buffer.toString("utf8", 0, length) }
  } finally {
    closeSync(fd)
  }
}

/** readSmallFile without blocking the event loop: the open, the check and the read (at most the size checked) on libuv's threads. */
export const readSmallFileAsync = async (path: string, maxBytes: number, options: { readonly followSymlink: boolean }): Promise<SmallFile> => {
  let handle: Awaited<ReturnType<typeof open>>
  try {
    handle = await open(path, openFlags(options))
  } catch (error) {
    return notFollowed(error, options)
  }
  try {
    const stat = await handle.stat()
    const refused = refusal(stat, maxBytes)
    if (refused !== undefined) return refused
    const buffer = Buffer.alloc(stat.size)
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0)
    return { version: versionOf(stat), text: buffer.toString("utf8", 0, bytesRead) }
  } finally {
    await handle.close()
  }
}

/** readSmallFile's text, symlinks followed; what is not read throws an Error naming the path and why (never what it holds). */
export const readSmallText = (path: string, maxBytes: number): string => textOf(path, readSmallFile(path, maxBytes, { followSymlink: true }))

/** readSmallText off the event loop. */
export const readSmallTextAsync = async (path: string, maxBytes: number): Promise<string> => textOf(path, await readSmallFileAsync(path, maxBytes, { followSymlink: true }))

const textOf = (path: string, read: SmallFile): string => {
  if ("problem" in read) throw new Error(`${path}: ${read.problem}`)
  return read.text
}

/** Non-blocking: a FIFO with no writer would block the open, and the event loop (or a libuv thread), for good. */
const openFlags = (options: { readonly followSymlink: boolean }): number => constants.O_RDONLY | constants.O_NONBLOCK | (options.followSymlink ? 0 : constants.O_NOFOLLOW)

const notFollowed = (error: unknown, options: { readonly followSymlink: boolean }): SmallFile => {
  if (!options.followSymlink && (error as NodeJS.ErrnoException).code === "ELOOP") return { version: "symlink", problem: "a symbolic link, not followed" }
  throw error
}

const versionOf = (stat: Stats): string => `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeMs}`

/** Why the open file is not read: not a regular file (a device or FIFO whose read never ends), or over `maxBytes`. */
const refusal = (stat: Stats, maxBytes: number): SmallFile | undefined => {
  if (!stat.isFile()) return { version: versionOf(stat), problem: "not a regular file" }
  if (stat.size > maxBytes) return { version: versionOf(stat), problem: `larger than ${maxBytes} bytes (${stat.size})` }
  return undefined
}
