// Confines the file server to its root (server.ts calls these before any file is opened): a
// requested path must be relative, short, free of NUL bytes and `..`, and what it names must
// resolve, symlinks followed, to a place inside the root's real path. Anything else is refused
// with a PathRefused whose message says why; nothing outside the root is read, created or written.
import * as Data from "effect/Data"
import { constants, readlinkSync, realpathSync } from "node:fs"
import { type FileHandle, lstat, mkdir, open, readlink, realpath } from "node:fs/promises"
import { basename, dirname, isAbsolute, join, posix, relative } from "node:path"

export class PathRefused extends Data.TaggedError("PathRefused")<{ readonly message: string }> {}

/** Longest path a client may name, in UTF-8 bytes. */
export const maxPathBytes = 1024
/** Longest path component (Linux NAME_MAX). */
const maxComponentBytes = 255
/** What an unfinished upload (and an unfinished download, on the client) is called until it is whole. */
export const partialSuffix = ".iip-part"
/**
 * Longest name of a file that grows as `<name>.iip-part` first (an upload on the server, a download
 * on the client): the partial's name must fit NAME_MAX.
 */
const maxNameBytes = maxComponentBytes - partialSuffix.length

/** Why `name` cannot be an upload's or a download's (its partial would not fit NAME_MAX); undefined when it can. */
export const nameTooLong = (name: string, what: "upload" | "download"): string | undefined => {
  const bytes = Buffer.byteLength(name, "utf8")
  return bytes <= maxNameBytes
    ? undefined
    : `has a name of ${bytes} bytes: a${what === "upload" ? "n" : ""} ${what}'s may be at most ${maxNameBytes} (${maxComponentBytes}, NAME_MAX, less the ${partialSuffix.length} of ${partialSuffix}, its unfinished ${what}'s suffix)`
}

const refuse = (requested: string, why: string): PathRefused =>
  new PathRefused({ message: `path refused: ${JSON.stringify(requested.length > 80 ? `${requested.slice(0, 80)}...` : requested)} ${why}` })

/** Checks a requested path as text and returns it normalised ("a//b/./c" is "a/b/c"). */
const checkRequestedPath = (requested: string): string => {
  const bytes = Buffer.byteLength(requested, "utf8")
  if (bytes === 0) throw refuse(requested, "is empty")
  if (bytes > maxPathBytes) throw refuse(requested, `is ${bytes} bytes long (at most ${maxPathBytes})`)
  if (requested.includes("\0")) throw refuse(requested, "contains a NUL byte")
  if (isAbsolute(requested)) throw refuse(requested, "is absolute: name it relative to the server's root")
  const parts = requested.split("/")
  if (parts.includes("..")) throw refuse(requested, "contains '..'")
  if (parts.some((part) => Buffer.byteLength(part, "utf8") > maxComponentBytes)) throw refuse(requested, `has a component over ${maxComponentBytes} bytes`)
  const normal = posix.normalize(requested).replace(/\/+$/, "")
  if (normal === "." || normal === "") throw refuse(requested, "names the root itself, not a file")
  return normal
}

/** Whether the real path `real` is `root` or below it. */
export const isInside = (root: string, real: string): boolean => {
  const rel = relative(root, real)
  return rel === "" || (rel !== ".." && !rel.startsWith("../") && !isAbsolute(rel))
}

const realOrUndefined = (path: string): Promise<string | undefined> =>
  realpath(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT" || error.code === "ENOTDIR") return undefined
    throw error
  })

/**
 * The real path of an existing file to read; `root` must itself be a real path. Synchronous: the
 * download handler reads its 10 KiB synchronously too (server.ts says why).
 */
export const resolveForRead = (root: string, requested: string): string => {
  const full = join(root, checkRequestedPath(requested))
  let real: string
  try {
    real = realpathSync.native(full)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === "ENOENT" || code === "ENOTDIR") throw refuse(requested, "does not exist")
    throw error
  }
  if (!isInside(root, real) || real === root) throw refuse(requested, "resolves outside the root")
  return real
}

/**
 * Refuses an opened file whose descriptor leads outside the root: a directory on its path swapped
 * for a symlink after resolveForRead checked it (O_NOFOLLOW guards only the last component). Linux
 * says where a descriptor leads in /proc/self/fd; elsewhere the check of resolveForRead stands alone.
 */
export const checkOpenedInside = (root: string, requested: string, fd: number): void => {
  let real: string
  try {
    real = readlinkSync(`/proc/self/fd/${fd}`)
  } catch {
    return
  }
  if (real.startsWith("/") && !isInside(root, real)) throw refuse(requested, "resolves outside the root")
}

/** A directory held open, the names in it reached through its descriptor. */
export interface HeldDirectory {
  readonly handle: FileHandle
  /** A path to `name` in it that a directory swapped on the way since cannot redirect. */
  readonly at: (name: string) => string
}

/**
 * Opens the directory `dir` (a real path checked to be inside the root), refused unless its
 * descriptor still leads inside the root. Node has no openat or renameat: names in it are reached
 * as /proc/self/fd/<fd>/<name> (Linux), which the kernel resolves through the descriptor, not the
 * path, so a directory on the way swapped for a symlink after the check cannot send a create, a
 * rename or an unlink outside the root. O_NOFOLLOW: `dir` itself swapped for a symlink is refused
 * (ELOOP). Elsewhere the names are reached through `dir`, checked as paths only.
 */
export const openDirectoryInside = async (root: string, dir: string, requested: string): Promise<HeldDirectory> => {
  const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW)
  const real = await readlink(`/proc/self/fd/${handle.fd}`).catch(() => undefined)
  if (real !== undefined && real.startsWith("/") && !isInside(root, real)) {
    await handle.close()
    throw refuse(requested, "resolves outside the root")
  }
  const base = real === undefined ? dir : `/proc/self/fd/${handle.fd}`
  return { handle, at: (name) => `${base}/${name}` }
}

export interface WriteTarget {
  /** The real path of the directory it goes in, and its name there. */
  readonly dir: string
  readonly name: string
  /** Where it grows until it takes its name (also the key of its upload's turn, server.ts). */
  readonly partial: string
}

/** What creating directories may take (server.ts: the root's count of files and directories). */
export interface DirectoryBudget {
  /** Takes one for a directory about to be made; throws when none may be. */
  readonly take: () => void
  /** Gives back one taken for a directory that was there after all. */
  readonly giveBack: () => void
  /**
   * The directories made, outermost first: the caller removes them again when the request is
   * refused, here (a later check) or after.
   */
  readonly made: Array<string>
}

/**
 * Where an upload of `requested` is written. Its directories are created when `create` is given
 * (each one taken from it, made in its parent held open, then checked to be inside the root);
 * without it a missing directory gives undefined.
 * An existing target that is a symlink must point inside the root (the upload replaces the link,
 * never writes through it); the partial file must be a regular file; the target may not itself be
 * named like a partial file.
 */
export const resolveForWrite = async (root: string, requested: string, create: DirectoryBudget | undefined): Promise<WriteTarget | undefined> => {
  const full = join(root, checkRequestedPath(requested))
  // Such an upload would end by renaming its own partial over another upload's, outside the turn
  // server.ts gives each unfinished upload (its quota figures taken from a file that is gone).
  if (full.endsWith(partialSuffix)) throw refuse(requested, `ends in ${partialSuffix}, the name the server gives an unfinished upload`)
  // Refused before anything is made: such an upload could never be written (ENAMETOOLONG at its partial).
  const tooLong = nameTooLong(basename(full), "upload")
  if (tooLong !== undefined) throw refuse(requested, tooLong)
  // The deepest directory on the way that exists, and the names still missing below it.
  const missing: Array<string> = []
  let dir = dirname(full)
  let real = await realOrUndefined(dir)
  while (real === undefined) {
    missing.unshift(basename(dir))
    dir = dirname(dir)
    real = await realOrUndefined(dir)
  }
  if (!isInside(root, real)) throw refuse(requested, "resolves outside the root")
  if (missing.length > 0 && create === undefined) return undefined
  for (const name of missing) {
    create!.take()
    // Made in its parent held open: a parent swapped for a symlink since its check cannot send it out of the root.
    const parent = await openDirectoryInside(root, real, requested).catch((error: unknown) => {
      create!.giveBack()
      throw error
    })
    const made = await mkdir(parent.at(name)).then(() => true, (error: NodeJS.ErrnoException) => {
      create!.giveBack()
      if (error.code !== "EEXIST") throw error
      return false
    }).finally(() => parent.handle.close())
    if (made) create!.made.push(join(real, name))
    real = await realpath(join(real, name))
    if (!isInside(root, real)) throw refuse(requested, "resolves outside the root")
  }
  const target = join(real, basename(full))
  const existing = await lstat(target).catch(() => undefined)
  if (existing?.isDirectory() === true) throw refuse(requested, "is a directory")
  if (existing?.isSymbolicLink() === true) {
    const points = await realOrUndefined(target)
    if (points === undefined || !isInside(root, points)) throw refuse(requested, "is a symlink that leads outside the root")
  }
  const partial = await lstat(target + partialSuffix).catch(() => undefined)
  if (partial !== undefined && !partial.isFile()) throw refuse(requested, `has an unfinished upload (${partialSuffix}) that is not a regular file`)
  return { dir: real, name: basename(full), partial: target + partialSuffix }
}
