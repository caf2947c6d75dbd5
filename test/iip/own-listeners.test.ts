// A process's own listeners (src/iip/ownListeners.ts): which addresses reach one as Linux routes a
// connect (its bound address; for 0.0.0.0 every IPv4 address of this host, for `::` every address;
// the unspecified address goes to loopback), the inbound one left to dials for the process's own
// service, this host's interface addresses read at most once a second and only when a dial's port
// is a wildcard listener's. An IIP client told of them never connects there: test/iip/dial-guard.test.ts.
import { BlockList } from "node:net"
import { describe, expect, it } from "vitest"
import { INTERFACES_REFRESH_MS, OwnListeners } from "../../src/iip/ownListeners.ts"

/** Interface addresses a test sets, and how often they were read. */
const fakeInterfaces = (addresses: ReadonlyArray<string>) => {
  const state = { addresses: [...addresses], reads: 0 }
  const read = () => {
    state.reads++
    const list = new BlockList()
    for (const address of state.addresses) list.addAddress(address, address.includes(":") ? "ipv6" : "ipv4")
    return list
  }
  return { state, read }
}

describe("a process's own listeners", () => {
  const host = fakeInterfaces(["127.0.0.1", "::1", "10.0.0.5", "fd00::5", "fe80::5"])
  const clock = { now: 0 }
  const listeners = new OwnListeners({ now: () => clock.now, interfaces: host.read })
  listeners.add({ host: "0.0.0.0", port: 4000 })
  listeners.add({ host: "::", port: 6000 })
  listeners.add({ host: "10.0.0.5", port: 7000 })
  listeners.add({ host: "127.0.0.1", port: 8000 })
  listeners.add({ host: "0.0.0.0", port: 5000 }, true) // the inbound one

  it.each([
    ["an IPv4 wildcard: this host's IPv4 addresses", 4000, ["10.0.0.5", "127.0.0.1", "127.8.9.10", "0.0.0.0", "::ffff:10.0.0.5", "::ffff:a00:5"], ["10.0.0.6", "fd00::5", "::1", "fe80::5%eth0", "::", "192.168.1.1"]],
    ["a dual-stack wildcard: every address of this host", 6000, ["10.0.0.5", "fd00::5", "FD00:0:0:0:0:0:0:5", "fe80::5%eth0", "::1", "::", "127.0.0.1", "0.0.0.0", "::ffff:10.0.0.5", "::ffff:127.0.0.1"], ["fd00::6", "fe80::6%eth0", "10.0.0.6", "::ffff:10.0.0.6"]],
    ["a bound address: that address only", 7000, ["10.0.0.5", "::ffff:10.0.0.5"], ["127.0.0.1", "fd00::5", "10.0.0.6"]],
    ["a loopback address: it, and the unspecified address", 8000, ["127.0.0.1", "0.0.0.0", "::ffff:127.0.0.1"], ["127.0.0.2", "10.0.0.5", "::1"]]
  ])("%s", (_name, port, reaching, notReaching) => {
    for (const address of reaching) expect(listeners.all.reaches(address, port), address).toBe(true)
    for (const address of notReaching) expect(listeners.all.reaches(address, port), address).toBe(false)
    // Another port on the same addresses is another process's (a second sidecar on this host).
    for (const address of reaching) expect(listeners.all.reaches(address, port + 1), `${address} at ${port + 1}`).toBe(false)
  })

  it("the serving (inbound) listener is reached by `all` only", () => {
    expect(listeners.all.reaches("10.0.0.5", 5000)).toBe(true)
    expect(listeners.exceptServing.reaches("10.0.0.5", 5000)).toBe(false)
    expect(listeners.exceptServing.reaches("10.0.0.5", 4000)).toBe(true)
  })

  it("reads this host's addresses at most once a second, and not for a port no wildcard listener has", () => {
    const fake = fakeInterfaces(["10.0.0.5"])
    const time = { now: 5000 }
    const own = new OwnListeners({ now: () => time.now, interfaces: fake.read })
    own.add({ host: "0.0.0.0", port: 4000 })
    own.add({ host: "10.0.0.5", port: 7000 })
    for (let i = 0; i < 100; i++) own.all.reaches("10.0.0.9", 7000)
    for (let i = 0; i < 100; i++) own.all.reaches("10.0.0.9", 9999)
    expect(fake.state.reads).toBe(0)
    expect(own.all.reaches("10.0.0.9", 4000)).toBe(false)
    expect(fake.state.reads).toBe(1)
    // A new address (DHCP, a new pod IP): seen once a second has passed, not before.
    fake.state.addresses.push("10.0.0.9")
    time.now += INTERFACES_REFRESH_MS - 1
    for (let i = 0; i < 100; i++) expect(own.all.reaches("10.0.0.9", 4000)).toBe(false)
    expect(fake.state.reads).toBe(1)
    time.now += 1
    expect(own.all.reaches("10.0.0.9", 4000)).toBe(true)
    expect(fake.state.reads).toBe(2)
    // Loopback needs no read at all.
    time.now += 10 * INTERFACES_REFRESH_MS
    expect(own.all.reaches("127.0.0.1", 4000)).toBe(true)
    expect(fake.state.reads).toBe(2)
  })
})

describe("this host's addresses unreadable", () => {
  // os.networkInterfaces() throws where uv_interface_addresses fails (some sandboxes); the check runs
  // inside a dial and inside dns.lookup's callback, where a throw would kill the dial's fiber or the process.
  it("a read that throws never escapes a dial's check: loopback still refused, the last addresses read kept, read again a second later", () => {
    const time = { now: 0 }
    const state = { fail: false, reads: 0 }
    const own = new OwnListeners({
      now: () => time.now,
      interfaces: () => {
        state.reads++
        if (state.fail) throw Object.assign(new Error("uv_interface_addresses returned Unknown system error 1"), { code: "ERR_SYSTEM_ERROR" })
        const list = new BlockList()
        list.addAddress("10.0.0.5", "ipv4")
        return list
      }
    })
    own.add({ host: "0.0.0.0", port: 4000 })
    expect(own.all.reaches("10.0.0.5", 4000)).toBe(true)
    state.fail = true
    time.now += INTERFACES_REFRESH_MS
    expect(own.all.reaches("10.0.0.5", 4000)).toBe(true)
    expect(own.all.reaches("127.0.0.1", 4000)).toBe(true)
    expect(own.all.reaches("10.0.0.6", 4000)).toBe(false)
    // A failing read is not retried on every dial either.
    const reads = state.reads
    for (let i = 0; i < 100; i++) own.all.reaches("10.0.0.6", 4000)
    expect(state.reads).toBe(reads)
    // Never read at all: loopback still refused.
    const never = new OwnListeners({ interfaces: () => { throw new Error("uv_interface_addresses") } })
    never.add({ host: "::", port: 4000 })
    expect(never.all.reaches("::1", 4000)).toBe(true)
    expect(never.all.reaches("10.0.0.5", 4000)).toBe(false)
  })
})

describe("a host with many addresses", () => {
  // Reading them is O(addresses): 5,000 on lo took ~40 ms for os.networkInterfaces() and ~35 ms more
  // for the BlockList, each second that dials go to a wildcard listener's port (every peer dial,
  // where a mesh's sidecars share their port). The interval grows with the read's cost.
  it("a slow read is repeated no more often than 100 times what it took: at most 1% of the event loop", () => {
    const time = { now: 0 }
    let reads = 0
    const own = new OwnListeners({
      now: () => time.now,
      interfaces: () => {
        reads++
        time.now += 50 // the read's own cost
        return new BlockList()
      }
    })
    own.add({ host: "0.0.0.0", port: 4000 })
    own.all.reaches("10.0.0.9", 4000)
    expect(reads).toBe(1)
    time.now += 100 * 50 - 50 - 1
    own.all.reaches("10.0.0.9", 4000)
    expect(reads).toBe(1)
    time.now += 1
    own.all.reaches("10.0.0.9", 4000)
    expect(reads).toBe(2)
  })
})
