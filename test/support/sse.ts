// A server-sent events client for the tests: connects to a URL, parses `event:`/`data:` blocks,
// and lets the test wait (bounded) for the events it expects, or pause reading to play a slow reader.
import * as http from "node:http"

export interface SseEvent {
  readonly event: string
  readonly data: string
}

export interface SseClient {
  readonly status: number
  readonly events: Array<SseEvent>
  /** Resolves when `done(events)` holds; rejects after `ms`. */
  until(done: (events: ReadonlyArray<SseEvent>) => boolean, ms: number, what: string): Promise<void>
  pause(): void
  resume(): void
  close(): void
}

export const openSse = (url: string, headers: http.OutgoingHttpHeaders = {}): Promise<SseClient> =>
  new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { host: "127.0.0.1", ...headers }, agent: false })
    req.once("error", reject)
    req.once("response", (res) => {
      const events: Array<SseEvent> = []
      const waiters = new Set<() => void>()
      let buffer = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => {
        buffer += chunk
        let end: number
        while ((end = buffer.indexOf("\n\n")) !== -1) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          let event = "message"
          const data: Array<string> = []
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) event = line.slice(7)
            else if (line.startsWith("data: ")) data.push(line.slice(6))
          }
          if (data.length > 0) events.push({ event, data: data.join("\n") })
        }
        for (const waiter of waiters) waiter()
      })
      res.on("error", () => {})
      resolve({
        status: res.statusCode ?? 0,
        events,
        until: (done, ms, what) =>
          new Promise<void>((ok, fail) => {
            if (done(events)) return ok()
            const check = () => {
              if (!done(events)) return
              waiters.delete(check)
              clearTimeout(timer)
              ok()
            }
            const timer = setTimeout(() => {
              waiters.delete(check)
              fail(new Error(`timed out after ${ms} ms waiting for ${what} (${events.length} events)`))
            }, ms)
            waiters.add(check)
          }),
        pause: () => res.pause(),
        resume: () => res.resume(),
        close: () => req.destroy()
      })
    })
  })
