// The calling side of one connection: channel 0, channels opened with `/sys/new_channel` under
// the id the server returns (PROTOCOL.md §4.2), and per channel a FIFO of outstanding requests
// that pairs each answer with the oldest request (§4.3). A request that times out keeps its place
// in the FIFO so its late answer is consumed and pairing never shifts. When the connection dies,
// every outstanding request fails at once.
import { EmptyBody, Limits, Status, SystemChannel, SystemPath } from "../protocol/constants.ts"
import { ProtocolError } from "../protocol/errors.ts"
import { clampDeadlineMs } from "../protocol/mesh.ts"
import { parseSystemAnswer } from "../protocol/systemMessages.ts"
import { monotonicMs } from "./clock.ts"
import type { Connection, MessageSink } from "./connection.ts"
import { ChannelOpenFailed, ConnectionClosed, RequestTimeout } from "./errors.ts"
import { Fifo } from "./fifo.ts"
import { lateGraceMs } from "./lateTimer.ts"

export type ResponseCallback = (error: ConnectionClosed | RequestTimeout | undefined, data: Buffer | undefined) => void

interface Waiter {
  callback: ResponseCallback
  timer: NodeJS.Timeout | undefined
  timeoutMs: number
  /** When the timer should fire (monotonicMs); Infinity once it fired (a late one waits its lateness more once). */
  firesAt: number
  /** The caller got its result (answer, timeout or error). */
  done: boolean
  channel: ClientChannel
}

export class ClientChannel {
  /** Outstanding requests in the order they were sent, timed-out ones included. */
  readonly fifo = new Fifo<Waiter>()
  /** Requests whose caller still waits (the FIFO minus timed-out ones). */
  waiting = 0
  closed = false
  /** Plain IIP does not stream; the field keeps channel shapes alike for the pool's picker. */
  readonly streaming = false
  readonly id: number
  readonly session: ClientSession

  constructor(id: number, session: ClientSession) {
    this.id = id
    this.session = session
  }

  /** Requests written and not yet answered, timed-out ones included: the channel's real load. */
  get outstanding(): number {
    return this.fifo.length
  }
}

const onTimeout = (waiter: Waiter): void => {
  waiter.timer = undefined
  if (waiter.done) return
  // Late: this process's stall, and an answer that came meanwhile may sit unread in the kernel's
  // buffer (client-own-stall.test.ts). The request waits its lateness more once (lateTimer.ts).
  const grace = lateGraceMs(monotonicMs() - waiter.firesAt, waiter.timeoutMs)
  waiter.firesAt = Infinity
  if (grace > 0) {
    waiter.timer = setTimeout(onTimeout, grace, waiter)
    return
  }
  waiter.done = true
  waiter.channel.waiting--
  waiter.callback(
    new RequestTimeout({ message: `no answer within ${waiter.timeoutMs} ms`, timeoutMs: waiter.timeoutMs }),
    undefined
  )
}

export class ClientSession implements MessageSink {
  readonly system: ClientChannel
  private readonly channels = new Map<number, ClientChannel>()
  private readonly closeListeners: Array<(error: ConnectionClosed) => void> = []

  readonly connection: Connection
  /** Told when a channel's last outstanding request is answered, before its caller is (the IIP client's queue goes first). */
  private readonly onChannelFree: (() => void) | undefined

  constructor(connection: Connection, onChannelFree?: () => void) {
    this.connection = connection
    this.onChannelFree = onChannelFree
    this.system = new ClientChannel(SystemChannel, this)
    this.channels.set(SystemChannel, this.system)
    connection.attach(this)
  }

  get closed(): boolean {
    return this.connection.closed
  }

  /** User channels (channel 0 not counted). */
  get channelCount(): number {
    return this.channels.size - 1
  }

  onClosed(listener: (error: ConnectionClosed) => void): void {
    this.closeListeners.push(listener)
  }

  /**
   * Writes one request on `channel` and calls `callback` exactly once with its answer or error.
   * Throws (and sends nothing) when the packet cannot be encoded or the writer is over its limit.
   */
  request(channel: ClientChannel, path: string, data: Uint8Array, timeLeftMs: number, callback: ResponseCallback): void {
    if (channel.closed || this.connection.closed) {
      const error = this.connection.closeError ?? new ConnectionClosed({ message: `channel ${channel.id} is closed`, sent: false })
      callback(new ConnectionClosed({ message: error.message, sent: false }), undefined)
      return
    }
    this.connection.writer.send(Status.RequestWhole, path, channel.id, data.length === 0 ? EmptyBody : data)
    // At most MaxDeadlineMs, as the mesh side clamps it: a time left past what a Node timer holds
    // (a caller's `now` in Date.now() terms) fired after 1 ms.
    const timeoutMs = clampDeadlineMs(timeLeftMs)
    const waiter: Waiter = { callback, timer: undefined, timeoutMs, firesAt: 0, done: false, channel }
    if (timeoutMs > 0) {
      waiter.firesAt = monotonicMs() + timeoutMs
      waiter.timer = setTimeout(onTimeout, timeoutMs, waiter)
    }
    channel.fifo.push(waiter)
    channel.waiting++
  }

  /** Opens a channel with `/sys/new_channel` and adopts the id the server returns. */
  openChannel(timeoutMs: number, callback: (error: ConnectionClosed | RequestTimeout | ChannelOpenFailed | undefined, channel: ClientChannel | undefined) => void): void {
    this.request(this.system, SystemPath.newChannel, EmptyBody, timeoutMs, (error, data) => {
      if (error !== undefined) return callback(error, undefined)
      const answer = parseSystemAnswer(data!)
      if (answer === undefined || answer.code !== 0) {
        const detail = answer === undefined ? `unreadable answer ${JSON.stringify(data!.toString("utf8", 0, 120))}` : `code ${answer.code} ${answer.message}`
        return callback(new ChannelOpenFailed({ message: `server refused a new channel: ${detail}` }), undefined)
      }
      // An id no packet can carry (2^40, 1.5) would fail every call on the channel as the caller's own PacketEncodeError.
      if (!Number.isInteger(answer.channelId) || answer.channelId <= 0 || answer.channelId > Limits.maxChannelId) {
        return callback(new ChannelOpenFailed({ message: `server gave a new channel the id ${answer.channelId}, out of 1..${Limits.maxChannelId}` }), undefined)
      }
      if (this.channels.has(answer.channelId)) {
        this.connection.close(`server returned channel id ${answer.channelId}, which is already open`, false)
        return callback(this.connection.closeError!, undefined)
      }
      const channel = new ClientChannel(answer.channelId, this)
      this.channels.set(channel.id, channel)
      this.connection.openChannel(channel.id)
      callback(undefined, channel)
    })
  }

  onMessage(channelId: number, _path: string, data: Buffer): void {
    const channel = this.channels.get(channelId)!
    const waiter = channel.fifo.shift()
    if (waiter === undefined) {
      const error = new ProtocolError({ rule: "unexpected-response", message: `response on channel ${channelId} with no request outstanding` })
      this.connection.close(`protocol violation (${error.rule}): ${error.message}`, false)
      return
    }
    if (channel.fifo.length === 0 && channel !== this.system) this.onChannelFree?.()
    if (waiter.done) return // its caller timed out; the late answer only keeps the pairing
    waiter.done = true
    channel.waiting--
    if (waiter.timer !== undefined) clearTimeout(waiter.timer)
    waiter.callback(undefined, data)
  }

  onClose(error: ConnectionClosed): void {
    for (const channel of this.channels.values()) {
      channel.closed = true
      const waiters = channel.fifo.takeAll()
      channel.waiting = 0
      for (const waiter of waiters) {
        if (waiter.done) continue
        waiter.done = true
        if (waiter.timer !== undefined) clearTimeout(waiter.timer)
        waiter.callback(error, undefined)
      }
    }
    for (const listener of this.closeListeners.splice(0)) listener(error)
  }
}
