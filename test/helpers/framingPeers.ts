// The framing fuzz's peers (test/sidecar/framing-fuzz.test.ts): the raw app at the end of the path,
// which reads every byte a proxy writes to it with llhttp and answers each request 200 with its
// number (some at their head, before their body, as an app refusing an upload does), and nginx as
// the one proxy the sidecars are compared with, run from a config in a temp dir.
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type Cleanup, withTimeout } from "../support/iipRaw.ts"
import { H1Stream, type H1Message } from "./h1Stream.ts"

export interface AppRequest {
  readonly seq: number
  readonly connection: number
  readonly message: H1Message
  /** Its end read (body and trailers whole). */
  complete: boolean
  /** Answered once its head was read, before its body (as an app refusing an upload does). */
  readonly early: boolean
  claimed: boolean
}

/** Every this many requests the app answers one at its head, before its body. */
const EARLY_EVERY = 5

export interface AppConnection {
  readonly id: number
  readonly received: Array<Buffer>
  stream: H1Stream
  closed: boolean
}

/** The raw app: every byte each connection receives, read by llhttp; each request answered 200 with its number. */
export const startRecordingApp = async (cleanup: Cleanup) => {
  const requests: Array<AppRequest> = []
  const connections: Array<AppConnection> = []
  const violations: Array<string> = []
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on("error", () => {})
    const connection: AppConnection = { id: connections.length, received: [], stream: undefined as unknown as H1Stream, closed: false }
    connections.push(connection)
    socket.once("close", () => {
      sockets.delete(socket)
      connection.closed = true
      connection.stream.close()
    })
    const answer = (record: AppRequest) => {
      if (!socket.destroyed) socket.write(`HTTP/1.1 200 OK\r\nx-seq: ${record.seq}\r\ncontent-length: 2\r\n\r\n${record.message.method === "HEAD" ? "" : "ok"}`, "latin1")
    }
    let current: AppRequest | undefined
    const onHead = (message: H1Message) => {
      const seq = requests.length
      current = { seq, connection: connection.id, message, complete: false, early: !message.upgrade && seq % EARLY_EVERY === EARLY_EVERY - 1, claimed: false }
      requests.push(current)
      if (current.early) answer(current)
    }
    const onMessage = (message: H1Message) => {
      const record = current!
      current = undefined
      record.complete = true
      if (!record.early) answer(record)
      if (!message.keepAlive && !message.upgrade) socket.end()
    }
    const read = (data: Buffer) => {
      if (connection.stream.push(data)) return
      const { stream } = connection
      if (stream.error !== undefined) {
        violations.push(`app connection ${connection.id}: B wrote bytes llhttp refuses (${(stream.error as { code?: string }).code}): ${JSON.stringify(Buffer.concat(connection.received).toString("latin1").slice(-600))}`)
        socket.destroy()
        return
      }
      // An upgrade the app declines (its 200): the connection stays HTTP/1.1, the bytes after the head are the next request's.
      stream.close()
      connection.stream = new H1Stream("request", onMessage, undefined, onHead)
      if (stream.rest.length > 0) read(stream.rest)
    }
    connection.stream = new H1Stream("request", onMessage, undefined, onHead)
    socket.on("data", (data: Buffer) => {
      connection.received.push(data)
      read(data)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => {
    for (const socket of sockets) socket.destroy()
    for (const connection of connections) connection.stream.close()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { port: (server.address() as net.AddressInfo).port, requests, connections, violations }
}

export type RecordingApp = Awaited<ReturnType<typeof startRecordingApp>>

/**
 * nginx as one proxy in front of `appPort`, from a config in a temp dir: the path of the Unix socket
 * it listens on; undefined when it is not installed. `readTimeoutMs` bounds its wait for an app's
 * answer it finds incomplete (its default, 60 s, would outlast the test).
 */
export const startNginx = async (cleanup: Cleanup, appPort: number, readTimeoutMs = 60_000): Promise<string | undefined> => {
  const binary = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"].find((path) => existsSync(path))
  if (binary === undefined) return undefined
  const dir = mkdtempSync(join(tmpdir(), "framing-fuzz-nginx-"))
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }))
  // What nginx passes on is compared with what the mesh does (framingDiff.ts), so it is told to pass
  // the client's request on as sent where it can. proxy_pass without a URI sends the target as the
  // client wrote it (an absolute URI's path and query), whatever merge_slashes and the percent-
  // decoding do to the path nginx matches locations on (checked: "/a//b/%2e%2e/c%41?x=%41" and
  // "/a/../f" arrive as sent). ignore_invalid_headers off: nginx would drop a field whose name is a
  // valid token but not its own idea of one (an underscore, "!#$%&'*+.^`|~"). What it still changes
  // by its role (Host, the framing, hop-by-hop fields, trailers) is not compared.
  // nginx takes no TCP port 0: a socket in its own dir has no port another process can take
  // between a pick and nginx's bind (the run's comparison would fail, or reach that process).
  const listening = join(dir, "nginx.sock")
  writeFileSync(join(dir, "nginx.conf"), `
worker_processes 1;
daemon off;
master_process off;
pid ${join(dir, "nginx.pid")};
error_log ${join(dir, "error.log")} warn;
events { worker_connections 256; }
http {
  access_log off;
  ignore_invalid_headers off;
  client_body_temp_path ${join(dir, "body")};
  proxy_temp_path ${join(dir, "proxy")};
  fastcgi_temp_path ${join(dir, "fastcgi")};
  uwsgi_temp_path ${join(dir, "uwsgi")};
  scgi_temp_path ${join(dir, "scgi")};
  upstream app { server 127.0.0.1:${appPort}; keepalive 16; }
  server {
    listen unix:${listening};
    proxy_read_timeout ${readTimeoutMs}ms;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
`)
  const child: ChildProcess = spawn(binary, ["-p", dir, "-c", join(dir, "nginx.conf"), "-e", join(dir, "error.log")], { stdio: "ignore" })
  cleanup.add(
    () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve()
        child.once("exit", () => resolve())
        child.kill("SIGKILL")
      })
  )
  // Listening once a connection is taken (bounded; nginx exiting first fails at once).
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      child.once("exit", (code) => reject(new Error(`nginx exited (${code}) before listening on ${listening}`)))
      const attempt = () => {
        const socket = net.connect(listening)
        socket.once("connect", () => {
          socket.destroy()
          resolve()
        })
        socket.once("error", () => {
          socket.destroy()
          setTimeout(attempt, 10)
        })
      }
      attempt()
    }),
    5000,
    "nginx to listen"
  )
  return listening
}
