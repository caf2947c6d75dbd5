// Helpers for the toolkit tests: IIP servers on 127.0.0.1 port 0 that answer `/who` with their
// name, load-balance clients closed by the Cleanup, a port nothing listens on, and an FNV-1
// written here from its definition (BigInt arithmetic), so the hash methods are checked against
// an independent computation rather than against src/balancer itself.
import * as net from "node:net"
import type { IipServer, ServerOptions } from "../../src/iip/server.ts"
import { LoadBalanceClient, type LoadBalanceClientOptions } from "../../src/toolkit/loadBalanceClient.ts"
import type { Cleanup } from "../support/iipRaw.ts"
import { startServer } from "../support/meshTest.ts"

export const quiet = () => {}

/** A server answering `/who` with `name`. */
export const namedServer = async (cleanup: Cleanup, name: string, options: ServerOptions = {}): Promise<IipServer> => {
  const server = await startServer(cleanup, options)
  server.handle("/who", () => name)
  return server
}

export const addressOf = (server: IipServer): string => `127.0.0.1:${server.address.port}`

export const startLb = (cleanup: Cleanup, options: LoadBalanceClientOptions): LoadBalanceClient => {
  const client = new LoadBalanceClient({ ...options, client: { log: quiet, ...options.client } })
  cleanup.add(() => client.close())
  return client
}

/** Names answered by `count` calls made one after the other. */
export const sequence = async (lb: LoadBalanceClient, count: number, path = "/who", clientIp?: string): Promise<Array<string>> => {
  const names: Array<string> = []
  for (let i = 0; i < count; i++) names.push((await lb.call(path, "", clientIp === undefined ? {} : { clientIp })).toString())
  return names
}

/** A loopback port with nothing listening on it (bound, then released). */
export const deadPort = (): Promise<number> =>
  new Promise((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

/** 32-bit FNV-1 (multiply, then xor each byte) of the UTF-8 bytes. */
export const fnv1 = (text: string): number => {
  let hash = 0x811c9dc5n
  for (const byte of Buffer.from(text, "utf8")) hash = ((hash * 0x01000193n) & 0xffffffffn) ^ BigInt(byte)
  return Number(hash)
}
