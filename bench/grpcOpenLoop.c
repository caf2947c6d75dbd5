// The gRPC bench's open-loop load generator in C (grpcCLoad.ts compiles it with grpcFrames.c, which
// reads the server's frames, and sidecar/loopCore.c, spawns it once and drives it; bench/grpc.ts runs
// it beside its Node generators): here its targets, connections and calls sent. Unary gRPC calls
// over cleartext HTTP/2 with prior knowledge, as grpc-js sends them, from outside the bench's Node
// process, so that neither a Node client's GC pauses nor its timers' lateness land in the tails.
// The schedule, the `run` command and its answer are loopCore.c's (its header).
//
//   target ID HOST PORT AUTHORITY|- PATH MESSAGE_BYTES
//     registers a target: one HTTP/2 connection (opened lazily, kept across runs, reopened after a
//     GOAWAY or a failure), calls of PATH (Echo) carrying MESSAGE_BYTES bytes of 0x63 (grpc.ts's
//     payload; at most 16,379: one DATA frame of the smallest size every peer takes) -> {"ok":true}
// A call is due at its time and sent then (HEADERS and one DATA frame with END_STREAM), or waits, in
// order, while the server's MAX_CONCURRENT_STREAMS are in flight, its flow-control window is short,
// or the connection is not yet set up (its SETTINGS not yet received); its latency still runs from
// its due time. Request headers: HPACK literals without indexing, no Huffman: :method POST, :scheme
// http, :path, :authority (AUTHORITY, or HOST:PORT for "-"), content-type application/grpc, te trailers.
//
// What is checked (honestly less than a gRPC client): the answer's header blocks are NOT decoded (the
// server's HPACK uses its dynamic table and Huffman), so neither :status nor grpc-status is read. A
// call succeeds when its DATA frames carry exactly the request's gRPC message back (prefix and bytes:
// Echo's answer) and then a HEADERS frame with END_STREAM (the trailers) ends the stream. Anything
// else is an error of that call, named: a trailers-only answer (HEADERS with END_STREAM first: a gRPC
// error), other bytes or a wrong count, DATA ending the stream, RST_STREAM, a GOAWAY past its stream,
// a connection cut or failed. The echoed bytes with a non-zero grpc-status in the trailers would pass.
//
// The peer is a proxy under test, some broken on purpose: every frame's length is bounded by what we
// advertise (16,384, the default), a header block (HEADERS and its CONTINUATIONs, 9 bytes counted for each frame) by 64 KiB, a
// frame breaking the protocol ends the connection with an error for each call on it; our output
// (requests, acks) waits in a 256 KiB buffer at most, of which calls leave 8 KiB to acks and window
// updates; calls in flight per connection 1,024 at most.
// Never a crash or a hang: what is unanswered GIVEUP_MS after the last call was due is an error.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "grpcH2.h"
#include "sidecar/loopCore.h"

#define MAX_TARGETS 64
#define MAX_AUTHORITY 256
#define MAX_PATH 256
#define MAX_MESSAGE (16384 - 5)
/** A connection's first stream id (a test compiles one near 2^31, to spend a connection's ids in a few calls). */
#ifndef FIRST_STREAM_ID
#define FIRST_STREAM_ID 1u
#endif

const char *const loopName = "grpcopenloop";
static Target targets[MAX_TARGETS];

static void watch(Conn *c, uint32_t events) {
  if (c->watching == events) return;
  c->watching = events;
  struct epoll_event ev = { .events = events, .data.ptr = c };
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

void closeConn(Conn *c) {
  Target *t = c->target;
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  if (t->current == c) t->current = NULL;
  for (Conn **p = &t->conns; *p != NULL; p = &(*p)->nextOfTarget)
    if (*p == c) {
      *p = c->nextOfTarget;
      break;
    }
  free(c);
}

/** The call on `s` ends: answered right (error NULL) or with `error`. */
void endStream(Conn *c, Stream *s, const char *error, int64_t now) {
  long i = s->request;
  s->request = -1;
  c->inFlight--;
  run.outstanding--;
  if (error != NULL) noteError("%s", error);
  else noteAnswered(i, now);
}

/** The connection fails: each call on it is an error with `error`; it closes. Before it was set up, the calls waiting for it fail too. */
void failConn(Conn *c, const char *error, int64_t now) {
  for (int k = 0; k < MAX_STREAMS && c->inFlight > 0; k++)
    if (c->streams[k].request >= 0) endStream(c, &c->streams[k], error, now);
  if (c->state != OPEN && c == c->target->current)
    for (; run.queued < run.next; run.queued++) {
      run.outstanding--;
      noteError("%s", error);
    }
  closeConn(c);
}

void failConnErrno(Conn *c, const char *what, int error, int64_t now) {
  char message[MAX_ERROR];
  snprintf(message, sizeof message, "%s: %s", what, error != 0 ? strerror(error) : "nothing written");
  failConn(c, message, now);
}

/** Writes what waits in the output buffer; what the socket does not take waits for EPOLLOUT. 0: the connection failed. */
int flush(Conn *c, int64_t now) {
  int done = writeRest(c->fd, c->out, c->outLen, &c->outAt);
  if (done < 0) {
    failConnErrno(c, "write", errno, now);
    return 0;
  }
  if (done == 0) {
    watch(c, EPOLLIN | EPOLLOUT);
    return 1;
  }
  c->outAt = c->outLen = 0;
  watch(c, EPOLLIN);
  return 1;
}

/** Room for `n` more bytes of output (what was written moved out first). */
static int outRoom(Conn *c, size_t n) {
  if (c->outAt > 0 && c->outLen + n > OUT_MAX) {
    memmove(c->out, c->out + c->outAt, c->outLen - c->outAt);
    c->outLen -= c->outAt;
    c->outAt = 0;
  }
  return c->outLen + n <= OUT_MAX;
}

/** Queues a control frame (an ack, a window update); a peer that makes them pile up past the buffer has its connection failed. */
int control(Conn *c, int type, int flags, uint32_t stream, const uint8_t *payload, uint32_t length, int64_t now) {
  if (!outRoom(c, 9 + length)) {
    failConn(c, "output over 256 KiB: the peer does not read", now);
    return 0;
  }
  frameHead(c->out + c->outLen, length, type, flags, stream);
  if (length > 0) memcpy(c->out + c->outLen + 9, payload, length); // a SETTINGS ack has no payload (NULL)
  c->outLen += 9 + length;
  return 1;
}

static Conn *openConn(Target *t, int64_t now) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  Conn *c = fd < 0 ? NULL : malloc(sizeof(Conn));
  if (c == NULL) {
    if (fd >= 0) close(fd);
    for (; run.queued < run.next; run.queued++) {
      run.outstanding--;
      noteError("socket: %s", strerror(errno));
    }
    return NULL;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->fd = fd;
  c->state = CONNECTING;
  c->watching = EPOLLOUT;
  c->target = t;
  c->draining = 0;
  c->nextOfTarget = t->conns;
  c->nextId = FIRST_STREAM_ID;
  c->inFlight = 0;
  c->peerMaxStreams = UINT32_MAX;
  c->peerInitialWindow = c->sendWindow = 65535;
  c->consumed = 0;
  c->blockStream = 0;
  c->inLen = c->outAt = c->outLen = 0;
  for (int k = 0; k < MAX_STREAMS; k++) c->streams[k].request = -1;
  t->conns = t->current = c;
  // The preface, our SETTINGS (no push, large stream windows) and the connection's window raised.
  static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  memcpy(c->out, preface, 24);
  uint8_t *p = c->out + 24;
  frameHead(p, 12, SETTINGS, 0, 0);
  p[9] = 0, p[10] = 2, put32(p + 11, 0);
  p[15] = 0, p[16] = 4, put32(p + 17, OUR_WINDOW);
  frameHead(p + 21, 4, WINDOW_UPDATE, 0, 0);
  put32(p + 30, OUR_WINDOW - 65535);
  c->outLen = 24 + 21 + 13;
  struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
  epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
  if (connect(fd, (struct sockaddr *)&t->addr, sizeof t->addr) != 0 && errno != EINPROGRESS) {
    failConnErrno(c, "connect", errno, now);
    return NULL;
  }
  return c;
}

/**
 * Starts the waiting calls, in order, on the target's connection while the server's limits allow
 * (its concurrent streams, its window, our slots and output buffer); opens one if there is none.
 */
void loopDispatch(long id, int64_t now) {
  Target *t = &targets[id];
  if (run.queued == run.next) return;
  Conn *c = t->current != NULL ? t->current : openConn(t, now);
  if (c == NULL || c->state != OPEN) return;
  int sent = 0;
  while (run.queued < run.next && c->inFlight < MAX_STREAMS && (uint32_t)c->inFlight < c->peerMaxStreams) {
    Stream *s = &c->streams[(c->nextId >> 1) % MAX_STREAMS];
    if (s->request >= 0 || c->nextId > 0x7fffffffu) break; // its slot still taken, or no id left
    if (c->sendWindow < t->expectedLen) break;
    if (c->peerInitialWindow < t->expectedLen) {
      // The server's stream window can never take one message in one frame: each call is an error.
      run.queued++;
      run.outstanding--;
      noteError("the server's stream window (%lld) is below one message", (long long)c->peerInitialWindow);
      continue;
    }
    if (!outRoom(c, t->callLen + CONTROL_RESERVE)) break;
    uint8_t *p = c->out + c->outLen;
    memcpy(p, t->call, t->callLen);
    put32(p + 5, c->nextId);
    put32(p + t->headersLen + 5, c->nextId);
    c->outLen += t->callLen;
    c->sendWindow -= t->expectedLen;
    *s = (Stream){ .request = run.queued++, .id = c->nextId, .got = 0, .same = 1, .headed = 0 };
    c->nextId += 2;
    c->inFlight++;
    sent = 1;
  }
  if (sent && !flush(c, now)) return;
  if (c->nextId > 0x7fffffffu) {
    // Its stream ids are spent: later calls go on a new connection; this one closes once answered.
    c->draining = 1;
    t->current = NULL;
    if (c->inFlight == 0) closeConn(c);
  }
}

void loopOnEvent(void *ptr, uint32_t events, int64_t now) {
  Conn *c = ptr;
  if (c->state == CONNECTING) {
    int error = connectResult(c->fd);
    if (error != 0) return failConnErrno(c, "connect", error, now);
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    c->state = PREFACED;
    if (!flush(c, now)) return;
  }
  if ((events & EPOLLOUT) && c->outLen > c->outAt && !flush(c, now)) return;
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) onReadable(c, now);
}

int loopHasTarget(long id) { return id >= 0 && id < MAX_TARGETS && targets[id].used; }

void loopAbandon(long id) {
  Target *t = &targets[id];
  for (Conn *c = t->conns, *next; c != NULL; c = next) {
    next = c->nextOfTarget;
    if (c->inFlight > 0 || c->state != OPEN) closeConn(c);
  }
}

/** Appends `value` as an HPACK integer with a 7-bit prefix (RFC 7541 5.1), the H bit 0: no Huffman. */
static size_t hpackLength(uint8_t *p, size_t value) {
  if (value < 127) {
    p[0] = (uint8_t)value;
    return 1;
  }
  size_t at = 0;
  p[at++] = 127;
  for (value -= 127; value >= 128; value >>= 7) p[at++] = (uint8_t)((value & 0x7f) | 0x80);
  p[at++] = (uint8_t)value;
  return at;
}

/** Appends one HPACK literal header field without indexing, a new name (RFC 7541 6.2.2). */
static size_t literal(uint8_t *p, const char *name, const char *value) {
  size_t n = strlen(name), v = strlen(value), at = 0;
  p[at++] = 0;
  at += hpackLength(p + at, n);
  memcpy(p + at, name, n), at += n;
  at += hpackLength(p + at, v);
  memcpy(p + at, value, v);
  return at + v;
}

static void registerTarget(long id, const char *host, long port, const char *authority, const char *path, long messageBytes) {
  if (id < 0 || id >= MAX_TARGETS) return answerError("target id must be 0-%d", MAX_TARGETS - 1);
  if (port < 1 || port > 65535) return answerError("bad port");
  if (strlen(authority) > MAX_AUTHORITY) return answerError("authority over %d bytes", MAX_AUTHORITY);
  if (strlen(path) > MAX_PATH || path[0] != '/') return answerError("path must start with / and be %d bytes at most", MAX_PATH);
  for (const char *h = authority; *h != '\0'; h++)
    if ((unsigned char)*h <= 0x20 || (unsigned char)*h >= 0x7f) return answerError("bad authority");
  if (messageBytes < 0 || messageBytes > MAX_MESSAGE) return answerError("message bytes must be 0-%d", MAX_MESSAGE);
  struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) return answerError("host must be an IPv4 address");
  Target *t = &targets[id];
  if (t->used) {
    while (t->conns != NULL) closeConn(t->conns);
    free(t->call);
  }
  char hostPort[64];
  // inet_pton took it: 15 characters at most.
  snprintf(hostPort, sizeof hostPort, "%.15s:%ld", host, port);
  uint8_t block[1024];
  size_t blockLen = 0;
  blockLen += literal(block + blockLen, ":method", "POST");
  blockLen += literal(block + blockLen, ":scheme", "http");
  blockLen += literal(block + blockLen, ":path", path);
  blockLen += literal(block + blockLen, ":authority", strcmp(authority, "-") == 0 ? hostPort : authority);
  blockLen += literal(block + blockLen, "content-type", "application/grpc");
  blockLen += literal(block + blockLen, "te", "trailers");
  uint32_t dataLen = 5 + (uint32_t)messageBytes;
  *t = (Target){ .used = 1, .addr = addr, .headersLen = 9 + blockLen, .callLen = 9 + blockLen + 9 + dataLen, .expectedLen = dataLen };
  t->call = malloc(t->callLen);
  if (t->call == NULL) {
    fprintf(stderr, "%s: out of memory\n", loopName);
    exit(1);
  }
  frameHead(t->call, (uint32_t)blockLen, HEADERS, END_HEADERS, 0);
  memcpy(t->call + 9, block, blockLen);
  uint8_t *data = t->call + t->headersLen;
  frameHead(data, dataLen, DATA, END_STREAM, 0);
  data[9] = 0;
  put32(data + 10, (uint32_t)messageBytes);
  memset(data + 14, 0x63, (size_t)messageBytes);
  t->expected = data + 9;
  emit("{\"ok\":true}");
  flushLine();
}

void loopCommand(char *line) {
  // Each field as long as the line can be, so an over-long one is named, not misread.
  static char host[MAX_COMMAND + 1], authority[MAX_COMMAND + 1], path[MAX_COMMAND + 1];
  long id, port, messageBytes;
  char extra;
  if (sscanf(line, "target %ld %4096s %ld %4096s %4096s %ld %c", &id, host, &port, authority, path, &messageBytes, &extra) == 6)
    return registerTarget(id, host, port, authority, path, messageBytes);
  answerError("unknown or malformed command (target ID HOST PORT AUTHORITY|- PATH MESSAGE_BYTES, run ID RATE MS WARMUP_MS GIVEUP_MS)");
}
