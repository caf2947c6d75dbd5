// Several fake hosts on one machine for multi-host tests (as root, iproute2 + util-linux only):
//
//   <p>sw : bridge br0 with mcast_snooping 0 (multicast is flooded), one port v<i> per host
//   <p>h<i>: eth0 = 10.77.X.(10+i)/24, route 224.0.0.0/4 dev eth0 (without it multicast sends
//            fail with ENETUNREACH, which bonjour-service hides)
//
// Safety (testing.md): X is chosen so 10.77.X.0/24 appears nowhere in the root namespace's
// addresses or routes, and claimed by adding a blackhole route for it in the root namespace before
// any host exists (a process started outside the namespaces by mistake fails locally), and removed on
// `destroy`, which also kills every process inside the namespaces and deletes them, and runs on
// process exit if the test did not call it. The veths are created straight between the bridge and
// host namespaces, never in the root namespace.
import { execFileSync, spawnSync } from "node:child_process"
import { type Capability, JsonLineProcess } from "./netnsProcess.ts"

const ip = (...args: ReadonlyArray<string>): string => execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
const tryIp = (...args: ReadonlyArray<string>): boolean => spawnSync("ip", args, { stdio: "ignore" }).status === 0

/** Root plus `ip netns`: what the multi-host tests need. */
export const probeRootNetns = (): Capability => {
  if (process.getuid?.() !== 0) return { ok: false, reason: "not root (network namespaces, bridges and routes need root)" }
  const version = spawnSync("ip", ["-V"], { encoding: "utf8" })
  if (version.status !== 0) return { ok: false, reason: "iproute2 (`ip`) is not installed" }
  const unshare = spawnSync("unshare", ["--uts", "true"], { encoding: "utf8" })
  if (unshare.status !== 0) return { ok: false, reason: `unshare --uts failed: ${unshare.stderr ?? ""}` }
  return { ok: true }
}

export interface Host {
  /** 1..n */
  readonly index: number
  /** Namespace name, also the host's name (its hostname under `exec`). */
  readonly name: string
  readonly address: string
  /** The host's bridge port in the switch namespace (down = unplugged). */
  readonly port: string
}

/**
 * Claims a free 10.77.X.0/24 (in no root-namespace address or route) by adding its blackhole
 * route; `ip route add` fails if another run claimed it first, and the next candidate is tried.
 */
const claimSubnet = (): string => {
  const used = `${ip("-br", "addr")}\n${ip("route", "show", "table", "all")}`
  const candidates = Array.from({ length: 250 }, (_, i) => i + 1).sort(() => Math.random() - 0.5)
  for (const x of candidates) {
    if (used.includes(`10.77.${x}.`)) continue
    if (tryIp("route", "add", "blackhole", `10.77.${x}.0/24`)) return `10.77.${x}`
  }
  throw new Error("no free 10.77.X.0/24 subnet")
}

export class NetnsHosts {
  readonly prefix: string
  readonly net: string
  readonly hosts: Array<Host> = []
  readonly switchNs: string
  /** Namespaces this instance made (only these are ever deleted). */
  private readonly created: Array<string> = []
  private destroyed = false
  /** The IPv6 subnet addSecondInterface uses (ULA, from the IPv4 one's X), and whether it was blackholed. */
  private readonly net6: string
  private net6Claimed = false
  private readonly onExit = () => this.destroy()

  private constructor(prefix: string, net: string) {
    this.prefix = prefix
    this.net = net
    this.switchNs = `${prefix}sw`
    this.net6 = `fd77:77:${net.split(".")[2]}`
  }

  get subnet(): string {
    return `${this.net}.0/24`
  }

  /** Creates `count` hosts on a bridge; on any failure removes what it made and throws. */
  static async create(count = 3): Promise<NetnsHosts> {
    const hosts = new NetnsHosts(`im${process.pid}`, claimSubnet())
    process.once("exit", hosts.onExit)
    try {
      hosts.build(count)
      await hosts.waitLinks()
    } catch (error) {
      hosts.destroy()
      throw error
    }
    return hosts
  }

  private build(count: number): void {
    const sw = this.switchNs
    ip("netns", "add", sw)
    this.created.push(sw)
    ip("-n", sw, "link", "set", "lo", "up")
    ip("-n", sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0", "stp_state", "0", "forward_delay", "0")
    ip("-n", sw, "link", "set", "br0", "up")
    for (let index = 1; index <= count; index++) {
      const host: Host = { index, name: `${this.prefix}h${index}`, address: `${this.net}.${10 + index}`, port: `v${index}` }
      ip("netns", "add", host.name)
      this.created.push(host.name)
      this.hosts.push(host)
      ip("-n", host.name, "link", "set", "lo", "up")
      ip("-n", sw, "link", "add", host.port, "type", "veth", "peer", "name", "eth0", "netns", host.name)
      ip("-n", sw, "link", "set", host.port, "master", "br0")
      ip("-n", sw, "link", "set", host.port, "up")
      spawnSync("ip", ["netns", "exec", host.name, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"], { stdio: "ignore" })
      ip("-n", host.name, "link", "set", "eth0", "multicast", "on")
      ip("-n", host.name, "addr", "add", `${host.address}/24`, "dev", "eth0")
      ip("-n", host.name, "link", "set", "eth0", "up")
      ip("-n", host.name, "route", "add", "224.0.0.0/4", "dev", "eth0")
    }
  }

  /** Links are ready when every bridge port forwards and every eth0 is up (polled: no event to wait on). */
  async waitLinks(hosts: ReadonlyArray<Host> = this.hosts, timeoutMs = 5000): Promise<void> {
    const deadline = performance.now() + timeoutMs
    for (;;) {
      const bridge = execFileSync("bridge", ["-n", this.switchNs, "link", "show"], { encoding: "utf8" })
      const ready = hosts.every(
        (host) =>
          new RegExp(`\\b${host.port}@[^\\n]*state forwarding`).test(bridge) &&
          ip("-n", host.name, "-br", "link", "show", "eth0").includes(" UP ")
      )
      if (ready) return
      if (performance.now() > deadline) throw new Error(`links not ready after ${timeoutMs} ms:\n${bridge}`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  host(index: number): Host {
    const host = this.hosts[index - 1]
    if (host === undefined) throw new Error(`no host ${index}`)
    return host
  }

  /** `node <args>` on `host`, under its own hostname (unshare --uts), its stdout read as JSON lines. */
  exec(host: Host, args: ReadonlyArray<string>, label = host.name): JsonLineProcess {
    return new JsonLineProcess(label, "ip", [
      "netns",
      "exec",
      host.name,
      "unshare",
      "--uts",
      "sh",
      "-c",
      'hostname "$0" && exec "$@"',
      host.name,
      process.execPath,
      ...args
    ])
  }

  /**
   * Gives `host` a second interface on the bridge (eth1, `<net>.(30+i)`) and IPv6 addresses beside
   * IPv4 on both (`<net6>::<i>` on eth0, `<net6>::1:<i>` on eth1): a dual-stack host on two
   * interfaces of one link. Returns what undoes it (the hosts are shared by a file's tests). The
   * IPv6 subnet is blackholed in the root namespace like the IPv4 one, on first use.
   */
  async addSecondInterface(host: Host): Promise<() => void> {
    if (!this.net6Claimed) {
      ip("-6", "route", "add", "blackhole", `${this.net6}::/64`)
      this.net6Claimed = true
    }
    const port = `${host.port}b`
    const address = `${this.net}.${30 + host.index}`
    ip("-n", this.switchNs, "link", "add", port, "type", "veth", "peer", "name", "eth1", "netns", host.name)
    ip("-n", this.switchNs, "link", "set", port, "master", "br0")
    ip("-n", this.switchNs, "link", "set", port, "up")
    ip("-n", host.name, "link", "set", "eth1", "multicast", "on")
    ip("-n", host.name, "addr", "add", `${address}/24`, "dev", "eth1")
    ip("-n", host.name, "addr", "add", `${this.net6}::${host.index}/64`, "dev", "eth0", "nodad")
    ip("-n", host.name, "addr", "add", `${this.net6}::1:${host.index}/64`, "dev", "eth1", "nodad")
    ip("-n", host.name, "link", "set", "eth1", "up")
    await this.waitLinks([{ ...host, port }])
    return () => {
      // Deleting one end of the veth deletes the other, with eth1's addresses.
      tryIp("-n", this.switchNs, "link", "del", port)
      tryIp("-n", host.name, "addr", "del", `${this.net6}::${host.index}/64`, "dev", "eth0")
    }
  }

  /** Unplugs the host: its bridge port goes down. */
  unplug(host: Host): void {
    ip("-n", this.switchNs, "link", "set", host.port, "down")
  }

  async replug(host: Host): Promise<void> {
    ip("-n", this.switchNs, "link", "set", host.port, "up")
    await this.waitLinks([host])
  }

  /** Kills every process in the namespaces, deletes them and the blackhole route. Idempotent, synchronous. */
  destroy(): void {
    if (this.destroyed) return
    this.destroyed = true
    process.removeListener("exit", this.onExit)
    for (const name of this.created) {
      const pids = spawnSync("ip", ["netns", "pids", name], { encoding: "utf8" }).stdout.split("\n").filter((p) => /^\d+$/.test(p))
      for (const pid of pids) {
        try {
          process.kill(Number(pid), "SIGKILL")
        } catch {
          // already gone
        }
      }
      tryIp("netns", "del", name)
    }
    tryIp("route", "del", "blackhole", this.subnet)
    if (this.net6Claimed) tryIp("-6", "route", "del", "blackhole", `${this.net6}::/64`)
  }
}
