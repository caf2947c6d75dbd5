// node:http as its CommonJS exports, for every module that calls into it (types still come from
// `import type`). An ESM import of node:http builds its namespace by reading every export, and
// its lazy WebSocket, CloseEvent and MessageEvent exports load node's undici, which brings
// node:http2, worker_threads and more: about 8 MB of resident memory in a sidecar that uses none
// of them.
export const nodeHttp = process.getBuiltinModule("node:http")
