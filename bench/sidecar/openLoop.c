// The sidecar bench's open-loop load generator in C (cLoad.ts compiles it, spawns it once and drives
// it; nodeLoad.ts's openLoop is the Node one it replaces by default). Written so that the generator's
// own GC pauses and timer lateness stay out of the tails it measures: the schedule, the `run` command
// and the answers are loopCore.c's (its header); here, HTTP/1.1 on non-blocking sockets, TCP_NODELAY.
//
// Line protocol, one command a line on stdin, one answer line on stdout per command:
//   target ID HOST PORT HOSTHEADER|- MAXSOCKETS
//     registers a target (connections opened lazily, kept alive, MAXSOCKETS at most) -> {"ok":true}
//   run ID RATE MS WARMUP_MS GIVEUP_MS (loopCore.c)
//     an open loop: request i is due at start + i / RATE, sent as soon as it is due (earlier ones
//     unanswered or not) on the target's most recently used idle connection (as node's Agent), or
//     a new one while fewer than MAXSOCKETS are open, else queued in order; its latency runs from
//     its due time to its answer's last byte; only requests due WARMUP_MS after the start count.
//     Answers are waited for GIVEUP_MS after the last was due at most, then the rest are errors.
//     -> {"sent":N,"errors":N,"firstError":null|"...","maxOutstanding":N,
//         "dueMs":[epoch ms (CLOCK_REALTIME-based), ...],"ms":[latency ms, ...]}
//   anything else -> {"error":"..."}; stdin's end -> exit.
// Each request is nodeLoad.ts's, byte for byte (POST /echo, 1 KiB body, Connection: keep-alive);
// each answer is read by httpAnswer.c and checked as there: status 200 and exactly 1,024 body bytes.
// The peers are proxies under test, some broken on purpose: every length is bounded (httpAnswer.h's;
// a command line 4 KiB; connections per target and over all) and a bad answer is an error of its
// request and closes its connection, never a crash.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httpAnswer.h"
#include "loopCore.h"

#define PATH "/echo"
#define PAYLOAD_BYTES 1024
#define MAX_TARGETS 64
#define MAX_SOCKETS 1024
/** Connections open at once over every target (each holds a 16 KiB buffer; a test compiles a lower one). */
#ifndef MAX_CONNS
#define MAX_CONNS 4096
#endif
#define MAX_HOST_HEADER 256

enum State { CONNECTING, BUSY, IDLE };

typedef struct Target Target;

typedef struct Conn {
  int fd;
  enum State state;
  /** The epoll events it is registered for (a change costs a system call). */
  uint32_t watching;
  Target *target;
  /** Its slot in target->conns (swap-removed on close). */
  int slot;
  /** The request on it (index in the run), or -1. */
  long request;
  size_t written;
  /** Its answer as read so far. */
  Answer answer;
} Conn;

struct Target {
  int used;
  struct sockaddr_in addr;
  int maxSockets;
  char *request;
  size_t requestLen;
  Conn **conns;
  int open;
  /** Idle connections, the most recently used last (a LIFO stack, as node's Agent). */
  Conn **idle;
  int idleCount;
};

const char *const loopName = "openloop";
static Target targets[MAX_TARGETS];
static int openConns;

static void closeConn(Conn *c) {
  Target *t = c->target;
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  if (c->state == IDLE) {
    for (int i = 0; i < t->idleCount; i++)
      if (t->idle[i] == c) {
        memmove(&t->idle[i], &t->idle[i + 1], (size_t)(t->idleCount - i - 1) * sizeof(Conn *));
        t->idleCount--;
        break;
      }
  }
  openConns--;
  t->conns[c->slot] = t->conns[--t->open];
  t->conns[c->slot]->slot = c->slot;
  free(c);
}

/** The request on `c` ends: with `error` (NULL: answered; its latency noted if measured). */
static void finishRequest(Conn *c, const char *error, int64_t now) {
  long i = c->request;
  c->request = -1;
  run.outstanding--;
  if (error != NULL) noteError("%s", error);
  else if (c->answer.status != 200) noteError("status %d", c->answer.status);
  else if (c->answer.body != PAYLOAD_BYTES) noteError("echoed %lld bytes", c->answer.body);
  else noteAnswered(i, now);
}

/** A request fails and its connection goes: the connection's state is unknown after it. */
static void failConn(Conn *c, const char *error, int64_t now) {
  if (c->request >= 0) finishRequest(c, error, now);
  closeConn(c);
}

static void watch(Conn *c, uint32_t events) {
  if (c->watching == events) return;
  c->watching = events;
  struct epoll_event ev = { .events = events, .data.ptr = c };
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/** Sends what is left of the request; waits for EPOLLOUT if the socket takes only part. */
static void writeRequest(Conn *c, int64_t now) {
  int done = writeRest(c->fd, c->target->request, c->target->requestLen, &c->written);
  if (done == 0) return watch(c, EPOLLIN | EPOLLOUT);
  if (done < 0) {
    char message[MAX_ERROR];
    snprintf(message, sizeof message, "write: %s", errno != 0 ? strerror(errno) : "nothing written");
    return failConn(c, message, now);
  }
  watch(c, EPOLLIN);
}

static void startRequest(Conn *c, long i, int64_t now) {
  c->request = i;
  c->state = BUSY;
  c->written = 0;
  answerReset(&c->answer);
  writeRequest(c, now);
}

/** Opens a connection for request `i` (it is written once connected); the request fails if it cannot. */
static void openConn(Target *t, long i, int64_t now) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  Conn *c = fd < 0 ? NULL : malloc(sizeof(Conn));
  if (c == NULL) {
    if (fd >= 0) close(fd);
    run.outstanding--;
    noteError("socket: %s", strerror(errno));
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  *c = (Conn){ .fd = fd, .state = CONNECTING, .watching = EPOLLOUT, .target = t, .slot = t->open, .request = i };
  t->conns[t->open++] = c;
  openConns++;
  struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
  epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
  if (connect(fd, (struct sockaddr *)&t->addr, sizeof t->addr) == 0) {
    startRequest(c, i, now);
  } else if (errno != EINPROGRESS) {
    char message[MAX_ERROR];
    snprintf(message, sizeof message, "connect: %s", strerror(errno));
    failConn(c, message, now);
  }
}

/** Closes the least recently used idle connection of a target other than `t`; 0 if there is none. */
static int evictIdle(Target *t) {
  for (int k = 0; k < MAX_TARGETS; k++)
    if (&targets[k] != t && targets[k].used && targets[k].idleCount > 0) {
      closeConn(targets[k].idle[0]);
      return 1;
    }
  return 0;
}

/**
 * Hands the queued requests, in order, to idle connections (the most recently used first) or new
 * ones (at MAX_CONNS over all targets, another target's idle one is closed for it).
 */
void loopDispatch(long id, int64_t now) {
  Target *t = &targets[id];
  while (run.queued < run.next) {
    if (t->idleCount > 0) startRequest(t->idle[--t->idleCount], run.queued++, now);
    else if (t->open < t->maxSockets && (openConns < MAX_CONNS || evictIdle(t))) openConn(t, run.queued++, now);
    else return;
  }
}

/** Bytes arrived on (or the peer closed) `c`. */
static void onReadable(Conn *c, int64_t now) {
  Answer *a = &c->answer;
  ssize_t n = read(c->fd, a->buf + a->len, sizeof a->buf - a->len);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (c->state == IDLE) {
    // The server closed an idle connection, or sent bytes nobody asked for: it is not reused.
    closeConn(c);
    return;
  }
  if (n < 0) {
    char message[MAX_ERROR];
    snprintf(message, sizeof message, "read: %s", strerror(errno));
    failConn(c, message, now);
    return;
  }
  if (n == 0) {
    if (a->phase == BODY_UNTIL_CLOSE) {
      finishRequest(c, NULL, now);
      closeConn(c);
    } else failConn(c, a->phase == HEAD && a->len == 0 ? "connection closed before the answer" : "connection closed mid-answer", now);
    return;
  }
  a->len += (size_t)n;
  const char *error = NULL;
  enum Parsed parsed = answerParse(a, &error);
  if (parsed == FAILED) failConn(c, error, now);
  else if (parsed == COMPLETE) {
    finishRequest(c, NULL, now);
    // Unasked-for bytes after the answer, or the server's close: the connection is not reused.
    if (a->closeAfter || a->len > 0 || c->written < c->target->requestLen) closeConn(c);
    else {
      c->state = IDLE;
      c->target->idle[c->target->idleCount++] = c;
    }
  }
}

void loopOnEvent(void *ptr, uint32_t events, int64_t now) {
  Conn *c = ptr;
  if (c->state == CONNECTING) {
    int error = connectResult(c->fd);
    if (error != 0) {
      char message[MAX_ERROR];
      snprintf(message, sizeof message, "connect: %s", strerror(error));
      failConn(c, message, now);
    } else if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) startRequest(c, c->request, now);
    return;
  }
  if (c->state == BUSY && (events & EPOLLOUT) && c->written < c->target->requestLen) {
    writeRequest(c, now);
    return;
  }
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) onReadable(c, now);
}

static void registerTarget(long id, const char *host, long port, const char *hostHeader, long maxSockets) {
  if (id < 0 || id >= MAX_TARGETS) return answerError("target id must be 0-%d", MAX_TARGETS - 1);
  if (port < 1 || port > 65535) return answerError("bad port");
  if (maxSockets < 1 || maxSockets > MAX_SOCKETS) return answerError("maxsockets must be 1-%d", MAX_SOCKETS);
  if (strlen(hostHeader) > MAX_HOST_HEADER) return answerError("host header over %d bytes", MAX_HOST_HEADER);
  for (const char *h = hostHeader; *h != '\0'; h++)
    if ((unsigned char)*h <= 0x20 || (unsigned char)*h >= 0x7f) return answerError("bad host header");
  struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) return answerError("host must be an IPv4 address");
  Target *t = &targets[id];
  if (t->used) {
    while (t->open > 0) closeConn(t->conns[0]);
    free(t->request);
    free(t->conns);
    free(t->idle);
  }
  char head[512];
  int headLen = strcmp(hostHeader, "-") == 0
    ? snprintf(head, sizeof head, "POST %s HTTP/1.1\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\nHost: %s:%ld\r\nConnection: keep-alive\r\n\r\n", PATH, PAYLOAD_BYTES, host, port)
    : snprintf(head, sizeof head, "POST %s HTTP/1.1\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\nhost: %s\r\nConnection: keep-alive\r\n\r\n", PATH, PAYLOAD_BYTES, hostHeader);
  *t = (Target){ .used = 1, .addr = addr, .maxSockets = (int)maxSockets, .requestLen = (size_t)headLen + PAYLOAD_BYTES };
  t->request = malloc(t->requestLen);
  t->conns = calloc((size_t)maxSockets, sizeof(Conn *));
  t->idle = calloc((size_t)maxSockets, sizeof(Conn *));
  if (t->request == NULL || t->conns == NULL || t->idle == NULL) {
    fprintf(stderr, "openloop: out of memory\n");
    exit(1);
  }
  memcpy(t->request, head, (size_t)headLen);
  // request.ts's payloadByte(i) = (i * 31 + 7) & 0xff.
  for (int i = 0; i < PAYLOAD_BYTES; i++) t->request[headLen + i] = (char)((i * 31 + 7) & 0xff);
  emit("{\"ok\":true}");
  flushLine();
}

int loopHasTarget(long id) { return id >= 0 && id < MAX_TARGETS && targets[id].used; }

void loopAbandon(long id) {
  Target *t = &targets[id];
  for (int k = t->open - 1; k >= 0; k--)
    if (t->conns[k]->state != IDLE) closeConn(t->conns[k]);
}

void loopCommand(char *line) {
  // Each field as long as the line can be, so an over-long one is named, not misread.
  static char host[MAX_COMMAND + 1], hostHeader[MAX_COMMAND + 1];
  long id, port, maxSockets;
  char extra;
  if (sscanf(line, "target %ld %4096s %ld %4096s %ld %c", &id, host, &port, hostHeader, &maxSockets, &extra) == 5)
    return registerTarget(id, host, port, hostHeader, maxSockets);
  answerError("unknown or malformed command (target ID HOST PORT HOSTHEADER|- MAXSOCKETS, run ID RATE MS WARMUP_MS GIVEUP_MS)");
}
