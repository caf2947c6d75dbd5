// The C proxies the sidecar is measured against, two hops each like the sidecar pair (client ->
// proxy A -> proxy B -> app), configured as a team would run one next to a pod: one worker or
// thread, HTTP/1.1 keep-alive upstreams reused across requests, no access log. Each runs in the
// foreground from a config generated into the bench's temp dir (pid, logs, temp files there too),
// on 127.0.0.1 ports taken free from the kernel; setpriv (util-linux) makes it die with the bench.
import { type ChildProcess, spawn } from "node:child_process"
import { closeSync, openSync, readFileSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import { join } from "node:path"
import { type Hop, HopFailed, type ProxyPair } from "./pair.ts"
import { HOST } from "./request.ts"
import { findExecutable } from "./which.ts"

export type ProxyKind = "nginx" | "haproxy"

export const INSTALL_HINT = "apt-get install nginx-light haproxy"

/** A port nothing listens on right now: the kernel's pick for port 0, released for the proxy to bind. */
const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, HOST, () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })

/** One hop's nginx.conf: a single process (no master, so the pid is the one doing the work). */
export const nginxConfig = (dir: string, name: string, listenPort: number, nextPort: number): string => `
worker_processes 1;
daemon off;
master_process off;
pid ${join(dir, `${name}.pid`)};
error_log ${join(dir, `${name}.error.log`)} warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${join(dir, `${name}-body`)};
  proxy_temp_path ${join(dir, `${name}-proxy`)};
  fastcgi_temp_path ${join(dir, `${name}-fastcgi`)};
  uwsgi_temp_path ${join(dir, `${name}-uwsgi`)};
  scgi_temp_path ${join(dir, `${name}-scgi`)};
  keepalive_timeout 60s;
  keepalive_requests 1000000;
  upstream next {
    server ${HOST}:${nextPort};
    keepalive 128;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }
  server {
    listen ${HOST}:${listenPort};
    location / {
      proxy_pass http://next;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`

/** One hop's haproxy.cfg: one thread, connections to the next hop shared by every request, no log. */
export const haproxyConfig = (listenPort: number, nextPort: number): string => `
global
  nbthread 1
  maxconn 4096

defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s

frontend hop
  bind ${HOST}:${listenPort}
  default_backend next

backend next
  server next ${HOST}:${nextPort}
`

const tail = (file: string): string => {
  try {
    return readFileSync(file, "utf8").slice(-800).trim()
  } catch {
    return ""
  }
}

/** Resolves once `port` accepts a connection; rejects if the process exits first or after 5 s. */
const waitForListener = (child: ChildProcess, name: string, port: number, diagnostics: () => string): Promise<void> =>
  new Promise((resolve, reject) => {
    let settled = false
    const settle = (error: HopFailed | undefined) => {
      if (settled) return
      settled = true
      clearTimeout(deadline)
      child.off("exit", onExit)
      error === undefined ? resolve() : reject(error)
    }
    const onExit = (code: number | null, signal: string | null) => settle(new HopFailed({ message: `${name} exited (${code ?? signal}) before listening on ${port}: ${diagnostics()}` }))
    child.once("exit", onExit)
    const deadline = setTimeout(() => settle(new HopFailed({ message: `${name} did not listen on ${port} within 5 s: ${diagnostics()}` })), 5000)
    const attempt = () => {
      if (settled) return
      const socket = net.connect(port, HOST)
      socket.once("connect", () => {
        socket.destroy()
        settle(undefined)
      })
      socket.once("error", () => {
        socket.destroy()
        setTimeout(attempt, 20)
      })
    }
    attempt()
  })

/** SIGTERM (both stop at once on it), SIGKILL if it has not exited 3 s later. */
const terminate = (child: ChildProcess): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    const force = setTimeout(() => child.kill("SIGKILL"), 3000)
    child.once("exit", () => {
      clearTimeout(force)
      resolve()
    })
    child.kill("SIGTERM")
  })

const setpriv = findExecutable("setpriv")

/** Runs `binary args` in the foreground, its stdout and stderr into `logFile`. */
const spawnProxy = (binary: string, args: ReadonlyArray<string>, logFile: string): ChildProcess => {
  const log = openSync(logFile, "a")
  try {
    // setpriv execs the proxy (the pid stays the proxy's) after asking for SIGTERM if the bench dies.
    const [command, ...rest] = setpriv === undefined ? [binary, ...args] : [setpriv, "--pdeathsig", "TERM", binary, ...args]
    return spawn(command!, rest, { stdio: ["ignore", log, log] })
  } finally {
    closeSync(log)
  }
}

/** Starts one hop listening on a free port and forwarding to `nextPort`; returns it once it accepts connections. */
const startHop = async (kind: ProxyKind, binary: string, name: string, nextPort: number, dir: string, spawned: Array<() => Promise<void>>): Promise<Hop & { readonly port: number }> => {
  const port = await freePort()
  const configFile = join(dir, `${name}.conf`)
  const logFile = join(dir, `${name}.log`)
  let child: ChildProcess
  if (kind === "nginx") {
    writeFileSync(configFile, nginxConfig(dir, name, port, nextPort))
    child = spawnProxy(binary, ["-p", dir, "-c", configFile, "-e", join(dir, `${name}.error.log`)], logFile)
  } else {
    writeFileSync(configFile, haproxyConfig(port, nextPort))
    child = spawnProxy(binary, ["-db", "-f", configFile], logFile)
  }
  const stop = () => terminate(child)
  spawned.push(stop)
  await new Promise<void>((resolve, reject) => {
    child.once("spawn", resolve)
    child.once("error", (error) => reject(new HopFailed({ message: `${name} did not start: ${error.message}` })))
  })
  await waitForListener(child, name, port, () => [tail(logFile), tail(join(dir, `${name}.error.log`))].filter((t) => t !== "").join("\n"))
  return { pid: child.pid!, stop, port }
}

/**
 * B in front of the app, A in front of B, or the line to print when the binary is not installed.
 * Temp files go under `dir`, which the caller removes.
 */
export const startProxyPair = async (kind: ProxyKind, appPort: number, dir: string, spawned: Array<() => Promise<void>>): Promise<ProxyPair | string> => {
  const binary = findExecutable(kind)
  if (binary === undefined) return `${kind} not found: ${INSTALL_HINT}`
  const b = await startHop(kind, binary, `${kind}-b`, appPort, dir, spawned)
  const a = await startHop(kind, binary, `${kind}-a`, b.port, dir, spawned)
  return { a, b, entry: { host: HOST, port: a.port } }
}
