// The gRPC bench's open-loop load generator in C (grpcCLoad.ts compiles it with sidecar/loopCore.c,
// spawns it once and drives it; bench/grpc.ts runs it beside its Node generators): unary gRPC calls
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
// advertise (16,384, the default), a header block (HEADERS and its CONTINUATIONs) by 64 KiB, a
// frame breaking the protocol ends the connection with an error for each call on it; our output
// (requests, acks) waits in a 256 KiB buffer at most; calls in flight per connection 1,024 at most.
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

#include "sidecar/loopCore.h"

#define MAX_TARGETS 64
#define MAX_AUTHORITY 256
#define MAX_PATH 256
#define MAX_MESSAGE (16384 - 5)
/** Calls in flight on a connection at most (a stream's slot is its id / 2 modulo this). */
#define MAX_STREAMS 1024
/** The largest frame we take (we do not raise SETTINGS_MAX_FRAME_SIZE from its default). */
#define OUR_MAX_FRAME 16384
/** Our stream windows (SETTINGS_INITIAL_WINDOW_SIZE) and the connection's, raised to it at once. */
#define OUR_WINDOW (1 << 30)
/** Connection-level DATA consumed before we give it back in a WINDOW_UPDATE. */
#define WINDOW_REFILL (1 << 20)
#define MAX_HEADER_BLOCK 65536
#define OUT_MAX (256 * 1024)
#define IN_CAP (64 * 1024)

enum { DATA = 0, HEADERS = 1, RST_STREAM = 3, SETTINGS = 4, PUSH_PROMISE = 5, PING = 6, GOAWAY = 7, WINDOW_UPDATE = 8, CONTINUATION = 9 };
enum { END_STREAM = 0x1, ACK = 0x1, END_HEADERS = 0x4, PADDED = 0x8, PRIORITY = 0x20 };
enum ConnState { CONNECTING, PREFACED, OPEN };

/** A call in flight: its request's index, its stream and how much of the answer came. */
typedef struct Stream {
  long request; /* -1: free slot */
  uint32_t id;
  uint32_t got;
  int same;
  int headed;
} Stream;

typedef struct Target Target;

typedef struct Conn {
  int fd;
  enum ConnState state;
  uint32_t watching;
  Target *target;
  /** After a GOAWAY: no new calls, closed when its last one ends. */
  int draining;
  struct Conn *nextOfTarget;
  uint32_t nextId;
  int inFlight;
  /** The server's settings and our send window on the connection. */
  uint32_t peerMaxStreams;
  int64_t peerInitialWindow;
  int64_t sendWindow;
  /** DATA bytes received and not yet given back. */
  int64_t consumed;
  /** The header block in progress (HEADERS without END_HEADERS): its stream, its bytes, its END_STREAM. */
  uint32_t blockStream;
  size_t blockBytes;
  int blockEndsStream;
  size_t inLen;
  size_t outAt, outLen;
  uint8_t in[IN_CAP];
  uint8_t out[OUT_MAX];
  Stream streams[MAX_STREAMS];
} Conn;

struct Target {
  int used;
  struct sockaddr_in addr;
  /** A call's frames (HEADERS, then DATA with the message), stream ids patched per call. */
  uint8_t *call;
  size_t callLen, headersLen;
  /** The answer each call must get back: the DATA payload sent. */
  const uint8_t *expected;
  uint32_t expectedLen;
  /** The connection new calls go on (NULL: none yet), and every connection (draining ones too). */
  Conn *current;
  Conn *conns;
};

const char *const loopName = "grpcopenloop";
static Target targets[MAX_TARGETS];

static void put24(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 16); p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v; }
static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static void frameHead(uint8_t *p, uint32_t length, int type, int flags, uint32_t stream) {
  put24(p, length);
  p[3] = (uint8_t)type;
  p[4] = (uint8_t)flags;
  put32(p + 5, stream & 0x7fffffffu);
}

static void watch(Conn *c, uint32_t events) {
  if (c->watching == events) return;
  c->watching = events;
  struct epoll_event ev = { .events = events, .data.ptr = c };
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void closeConn(Conn *c) {
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
static void endStream(Conn *c, Stream *s, const char *error, int64_t now) {
  long i = s->request;
  s->request = -1;
  c->inFlight--;
  run.outstanding--;
  if (error != NULL) noteError("%s", error);
  else noteAnswered(i, now);
}

/** The connection fails: each call on it is an error with `error`; it closes. Before it was set up, the calls waiting for it fail too. */
static void failConn(Conn *c, const char *error, int64_t now) {
  for (int k = 0; k < MAX_STREAMS && c->inFlight > 0; k++)
    if (c->streams[k].request >= 0) endStream(c, &c->streams[k], error, now);
  if (c->state != OPEN && c == c->target->current)
    for (; run.queued < run.next; run.queued++) {
      run.outstanding--;
      noteError("%s", error);
    }
  closeConn(c);
}

static void failConnErrno(Conn *c, const char *what, int error, int64_t now) {
  char message[MAX_ERROR];
  snprintf(message, sizeof message, "%s: %s", what, error != 0 ? strerror(error) : "nothing written");
  failConn(c, message, now);
}

/** Writes what waits in the output buffer; what the socket does not take waits for EPOLLOUT. 0: the connection failed. */
static int flush(Conn *c, int64_t now) {
  while (c->outAt < c->outLen) {
    // write(2), as openLoop.c: the bench counts write-family system calls from /proc/PID/io.
    ssize_t n = write(c->fd, c->out + c->outAt, c->outLen - c->outAt);
    if (n > 0) {
      c->outAt += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      watch(c, EPOLLIN | EPOLLOUT);
      return 1;
    }
    failConnErrno(c, "write", n < 0 ? errno : 0, now);
    return 0;
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
static int control(Conn *c, int type, int flags, uint32_t stream, const uint8_t *payload, uint32_t length, int64_t now) {
  if (!outRoom(c, 9 + length)) {
    failConn(c, "output over 256 KiB: the peer does not read", now);
    return 0;
  }
  frameHead(c->out + c->outLen, length, type, flags, stream);
  memcpy(c->out + c->outLen + 9, payload, length);
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
  c->nextId = 1;
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
    if (s->request >= 0 || c->nextId > 0x7fffffffu) break;
    if (c->sendWindow < t->expectedLen) break;
    if (c->peerInitialWindow < t->expectedLen) {
      // The server's stream window can never take one message in one frame: each call is an error.
      run.queued++;
      run.outstanding--;
      noteError("the server's stream window (%lld) is below one message", (long long)c->peerInitialWindow);
      continue;
    }
    if (!outRoom(c, t->callLen)) break;
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
  if (sent) flush(c, now);
}

static Stream *streamOf(Conn *c, uint32_t id) {
  Stream *s = &c->streams[(id >> 1) % MAX_STREAMS];
  return (id & 1) && s->request >= 0 && s->id == id ? s : NULL;
}

/** A DATA frame's payload (padding stripped) for stream `s` (NULL: a call that ended already). 0: the connection failed. */
static int onData(Conn *c, Stream *s, const uint8_t *data, uint32_t length, int ends, int64_t now) {
  if (s == NULL) return 1;
  const Target *t = c->target;
  if (s->got + length > t->expectedLen) {
    s->same = 0;
    s->got = t->expectedLen + 1;
  } else {
    if (s->same && memcmp(t->expected + s->got, data, length) != 0) s->same = 0;
    s->got += length;
  }
  if (s->same) {
    if (ends) endStream(c, s, "the answer ended without trailers (DATA with END_STREAM)", now);
    return 1;
  }
  // The answer is wrong already: the call ends now and its stream is cancelled (unless the server ended it).
  uint32_t id = s->id;
  endStream(c, s, s->got > t->expectedLen ? "answered more bytes than were sent" : "answer's bytes differ", now);
  if (ends) return 1;
  uint8_t code[4];
  put32(code, 0x8);
  return control(c, RST_STREAM, 0, id, code, 4, now);
}

/** A whole header block on stream `id` has come (its END_STREAM as said): the answer's head, or its trailers. */
static void onHeaderBlock(Conn *c, uint32_t id, int endsStream, int64_t now) {
  Stream *s = streamOf(c, id);
  if (s == NULL) return;
  if (!endsStream) {
    s->headed = 1;
    return;
  }
  if (!s->headed) return endStream(c, s, "trailers-only answer (a gRPC error; grpc-status not decoded)", now);
  if (s->got != c->target->expectedLen) {
    char message[MAX_ERROR];
    snprintf(message, sizeof message, "answered %u bytes of %u", s->got, c->target->expectedLen);
    return endStream(c, s, message, now);
  }
  endStream(c, s, NULL, now);
}

/** Handles one frame (its payload whole in `p`). 0: the connection failed and is closed. */
static int onFrame(Conn *c, int type, int flags, uint32_t stream, const uint8_t *p, uint32_t length, int64_t now) {
  char message[MAX_ERROR];
  if (c->blockStream != 0 && (type != CONTINUATION || stream != c->blockStream)) {
    failConn(c, "protocol error: a header block interrupted", now);
    return 0;
  }
  if (type == DATA || type == HEADERS) {
    if (stream == 0) {
      failConn(c, "protocol error: DATA or HEADERS on stream 0", now);
      return 0;
    }
    uint32_t pad = 0;
    if (flags & PADDED) {
      pad = length > 0 ? p[0] + 1u : 1u;
      if (pad > length) {
        failConn(c, "protocol error: padding over the frame", now);
        return 0;
      }
    }
    if (type == DATA) {
      c->consumed += length;
      if (c->consumed >= WINDOW_REFILL) {
        uint8_t increment[4];
        put32(increment, (uint32_t)c->consumed);
        c->consumed = 0;
        if (!control(c, WINDOW_UPDATE, 0, 0, increment, 4, now)) return 0;
      }
      return onData(c, streamOf(c, stream), p + (pad > 0 ? 1 : 0), length - pad, flags & END_STREAM, now);
    }
    uint32_t skip = (pad > 0 ? 1 : 0) + ((flags & PRIORITY) ? 5 : 0);
    if (skip + (pad > 0 ? pad - 1 : 0) > length) {
      failConn(c, "protocol error: HEADERS shorter than its padding and priority", now);
      return 0;
    }
    c->blockBytes = length;
    c->blockEndsStream = flags & END_STREAM;
    if (flags & END_HEADERS) onHeaderBlock(c, stream, c->blockEndsStream, now);
    else c->blockStream = stream;
    return 1;
  }
  if (type == CONTINUATION) {
    if (c->blockStream == 0) {
      failConn(c, "protocol error: CONTINUATION without HEADERS", now);
      return 0;
    }
    c->blockBytes += length;
    if (c->blockBytes > MAX_HEADER_BLOCK) {
      failConn(c, "header block over 65536 bytes", now);
      return 0;
    }
    if (flags & END_HEADERS) {
      c->blockStream = 0;
      onHeaderBlock(c, stream, c->blockEndsStream, now);
    }
    return 1;
  }
  if (type == RST_STREAM) {
    Stream *s = length == 4 ? streamOf(c, stream) : NULL;
    if (s != NULL) {
      snprintf(message, sizeof message, "stream reset by the server (RST_STREAM code %u)", get32(p));
      endStream(c, s, message, now);
    }
    return 1;
  }
  if (type == SETTINGS) {
    if (flags & ACK) return 1;
    if (length % 6 != 0 || stream != 0) {
      failConn(c, "protocol error: malformed SETTINGS", now);
      return 0;
    }
    for (uint32_t at = 0; at < length; at += 6) {
      uint32_t id = (uint32_t)p[at] << 8 | p[at + 1], value = get32(p + at + 2);
      if (id == 3) c->peerMaxStreams = value;
      else if (id == 4 && value > 0x7fffffffu) {
        failConn(c, "protocol error: INITIAL_WINDOW_SIZE over 2^31-1", now);
        return 0;
      } else if (id == 4) c->peerInitialWindow = value;
      else if (id == 5 && (value < 16384 || value > 16777215)) {
        failConn(c, "protocol error: MAX_FRAME_SIZE out of range", now);
        return 0;
      }
      // MAX_FRAME_SIZE at or over 16,384 (the range's least): our frames fit whatever it says.
    }
    if (!control(c, SETTINGS, ACK, 0, NULL, 0, now)) return 0;
    c->state = OPEN;
    return 1;
  }
  if (type == PING) {
    if (length != 8) {
      failConn(c, "protocol error: PING not of 8 bytes", now);
      return 0;
    }
    return (flags & ACK) || control(c, PING, ACK, 0, p, 8, now);
  }
  if (type == GOAWAY) {
    if (length < 8) {
      failConn(c, "protocol error: GOAWAY under 8 bytes", now);
      return 0;
    }
    uint32_t last = get32(p) & 0x7fffffffu;
    snprintf(message, sizeof message, "GOAWAY (code %u) before the call's stream was taken", get32(p + 4));
    for (int k = 0; k < MAX_STREAMS; k++)
      if (c->streams[k].request >= 0 && c->streams[k].id > last) endStream(c, &c->streams[k], message, now);
    // Later calls go on a new connection; this one closes once what the server took is answered.
    c->draining = 1;
    if (c->target->current == c) c->target->current = NULL;
    return 1;
  }
  if (type == WINDOW_UPDATE) {
    if (length != 4) {
      failConn(c, "protocol error: WINDOW_UPDATE not of 4 bytes", now);
      return 0;
    }
    // A stream's window is not tracked: each call sends its one DATA frame whole when it starts.
    if (stream == 0) c->sendWindow += get32(p) & 0x7fffffffu;
    if (c->sendWindow > 0x7fffffff) {
      failConn(c, "protocol error: connection window over 2^31-1", now);
      return 0;
    }
    return 1;
  }
  if (type == PUSH_PROMISE) {
    failConn(c, "protocol error: PUSH_PROMISE though push is off", now);
    return 0;
  }
  return 1; // PRIORITY and unknown types: nothing to do
}

/** Bytes arrived on (or the peer closed) `c`: its whole frames handled, a partial one kept. */
static void onReadable(Conn *c, int64_t now) {
  ssize_t n = read(c->fd, c->in + c->inLen, IN_CAP - c->inLen);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) {
    if (n < 0) failConnErrno(c, "read", errno, now);
    else failConn(c, c->state == OPEN ? "connection closed by the server" : "connection closed before the server's SETTINGS", now);
    return;
  }
  c->inLen += (size_t)n;
  size_t at = 0;
  if (c->state == PREFACED && c->inLen >= 9 && c->in[3] != SETTINGS) {
    failConn(c, "protocol error: the server's first frame is not SETTINGS", now);
    return;
  }
  while (c->inLen - at >= 9) {
    const uint8_t *f = c->in + at;
    uint32_t length = (uint32_t)f[0] << 16 | (uint32_t)f[1] << 8 | f[2];
    if (length > OUR_MAX_FRAME) {
      char message[MAX_ERROR];
      snprintf(message, sizeof message, "frame of %u bytes over the 16384 we take", length);
      failConn(c, message, now);
      return;
    }
    if (c->inLen - at < 9 + length) break;
    if (!onFrame(c, f[3], f[4], get32(f + 5) & 0x7fffffffu, f + 9, length, now)) return;
    at += 9 + length;
  }
  memmove(c->in, c->in + at, c->inLen - at);
  c->inLen -= at;
  if (c->draining && c->inFlight == 0) return closeConn(c);
  // Acks and window updates, and the calls that waited for the connection, a stream or the window.
  if (c->outLen > c->outAt && !flush(c, now)) return;
}

void loopOnEvent(void *ptr, uint32_t events, int64_t now) {
  Conn *c = ptr;
  if (c->state == CONNECTING) {
    int error = 0;
    socklen_t len = sizeof error;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len);
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
