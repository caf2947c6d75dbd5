// What node:tls costs per socket write (issue 15 and issue 14's mTLS share), in process: one
// connection on loopback, the client writing `--bytes` per write, one write per turn of the event
// loop (as the IIP writer flushes), the server reading with 'data' events; the same over plain TCP
// and over TLS 1.3 with the mesh's cipher suites and the bench sidecars' certificates (a client
// certificate too, as mTLS). Reports CPU microseconds per write, both ends together (this process:
// the client's write and the server's read), and the difference: a fixed part per write (the TLS
// record, SSL_write/SSL_read and node's TLSWrap around them) and a part per byte (AES-GCM both ways).
//
//   npm run -s bench -- tlsWrite [--bytes 1100] [--writes 20000] [--rounds 3]
//
// At saturation the sidecars' IIP writer sends a batch of many requests in one write (bench --
// sidecar's syscalls line: about 0.1 IIP write per request), so what mTLS costs a request there is
// mostly the part per byte; at low rates, one write per request, the fixed part.
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as tls from "node:tls"
import { MESH_CIPHERSUITES } from "../src/iip/tls.ts"
import { writeBenchCredentials } from "./sidecar/credentials.ts"

const cpuUs = (): number => {
  const usage = process.cpuUsage()
  return usage.user + usage.system
}

/** CPU µs per write of `bytes`, `writes` of them, one a turn; `secure` over mTLS. */
const perWrite = async (secure: boolean, bytes: number, writes: number, credentials: (name: string) => tls.SecureContextOptions): Promise<number> => {
  const total = bytes * writes
  let received = 0
  let allIn!: () => void
  const arrived = new Promise<void>((resolve) => (allIn = resolve))
  const onConnection = (socket: net.Socket) => {
    socket.on("data", (chunk: Buffer) => {
      received += chunk.length
      if (received >= total) allIn()
    })
  }
  const server = secure
    ? tls.createServer({ ...credentials("b"), requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3", ciphers: MESH_CIPHERSUITES }, onConnection)
    : net.createServer(onConnection)
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as net.AddressInfo).port
  const client = await new Promise<net.Socket>((resolve, reject) => {
    const options: tls.ConnectionOptions = { ...credentials("a"), host: "127.0.0.1", port, checkServerIdentity: () => undefined, minVersion: "TLSv1.3", ciphers: MESH_CIPHERSUITES }
    const socket: net.Socket = secure ? tls.connect(options, () => resolve(socket)) : net.connect(port, "127.0.0.1", () => resolve(socket))
    socket.once("error", reject)
  })
  try {
    client.setNoDelay(true)
    const data = Buffer.alloc(bytes, 0x61)
    const started = cpuUs()
    let sent = 0
    await new Promise<void>((resolve) => {
      const next = () => {
        if (sent === writes) return resolve()
        sent++
        if (client.write(data)) setImmediate(next)
        else client.once("drain", next)
      }
      next()
    })
    await arrived
    return (cpuUs() - started) / writes
  } finally {
    client.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const flag = (name: string, fallback: number): number => {
    const at = args.indexOf(name)
    return at === -1 ? fallback : Number(args[at + 1])
  }
  const bytes = flag("--bytes", 1100)
  const writes = flag("--writes", 20000)
  const rounds = flag("--rounds", 3)
  const dir = mkdtempSync(join(tmpdir(), "iip-tls-write-"))
  try {
    const dirs = await writeBenchCredentials(dir, ["a", "b"])
    const credentials = (name: string): tls.SecureContextOptions => ({
      key: readFileSync(join(dirs[name]!, "key.pem")),
      cert: readFileSync(join(dirs[name]!, "chain.pem")),
      ca: readFileSync(join(dirs[name]!, "bundle.pem"))
    })
    const results: Array<{ plain: number; tls: number }> = []
    for (let round = 0; round < rounds; round++) {
      // Alternating which goes first, so a moment of the machine falls on both alike.
      const plainFirst = round % 2 === 0
      const first = await perWrite(!plainFirst, bytes, writes, credentials)
      const second = await perWrite(plainFirst, bytes, writes, credentials)
      const result = plainFirst ? { plain: first, tls: second } : { plain: second, tls: first }
      results.push(result)
      console.log(`round ${round + 1}: ${bytes} B a write, CPU per write (both ends): plain ${result.plain.toFixed(2)} us, TLS ${result.tls.toFixed(2)} us (+${(result.tls - result.plain).toFixed(2)})`)
    }
    console.log(JSON.stringify({ bench: "tlsWrite", bytes, writes, rounds: results }))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
