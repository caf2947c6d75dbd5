// A TCP listener on 127.0.0.1 port 0 that only counts the connections it gets (closing each): it
// stands for a port on this host (an app's, an admin's) that a dial must never reach.
import * as net from "node:net"
import type { Cleanup } from "./iipRaw.ts"

export interface CountingListener {
  readonly port: number
  readonly connections: () => number
}

export const countingListener = async (cleanup: Cleanup): Promise<CountingListener> => {
  let connections = 0
  const server = net.createServer((socket) => {
    connections++
    socket.destroy()
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { port: (server.address() as net.AddressInfo).port, connections: () => connections }
}
