// Reading a small file that another process wrote (the local directory's announcements, the
// endpoints file, the sidecar's config file), without trusting what sits at the path: it is opened without blocking (a FIFO
// with no writer would block the open, and the event loop, for good), then checked on the open
// descriptor (a regular file, not a device or FIFO whose read never ends, of at most `maxBytes`),
// so a swap between the check and the read changes nothing.
import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs"

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
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | (options.followSymlink ? 0 : constants.O_NOFOLLOW))
  } catch (error) {
    if (!options.followSymlink && (error as NodeJS.ErrnoException).code === "ELOOP") return { version: "symlink", problem: "a symbolic link, not followed" }
    throw error
  }
  try {
    const stat = fstatSync(fd)
    const version = `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeMs}`
    if (!stat.isFile()) return { version, problem: "not a regular file" }
    if (stat.size > maxBytes) return { version, problem: `larger than ${maxBytes} bytes (${stat.size})` }
    const buffer = Buffer.alloc(stat.size)
    const length = readSync(fd, buffer, 0, buffer.length, 0)
    return { version, text: buffer.toString("utf8", 0, length) }
  } finally {
    closeSync(fd)
  }
}
