// The open-loop core of the C load generators (loopCore.h says who links it): single-threaded, epoll,
// a timerfd for the schedule (ns, not epoll_wait's ms), so that the generator's own pauses and timer
// lateness stay out of the tails it measures. Request i of a run is due at start + i / RATE and its
// latency runs from then, however late the generator could send it (no coordinated omission).
//
// Line protocol, one command a line on stdin, one answer line on stdout per command:
//   run ID RATE MS WARMUP_MS GIVEUP_MS
//     an open loop on target ID; only requests due WARMUP_MS after the start count. Answers are
//     waited for GIVEUP_MS after the last was due at most, then the rest are errors.
//     -> {"sent":N,"errors":N,"firstError":null|"...","maxOutstanding":N,
//         "dueMs":[epoch ms (CLOCK_REALTIME-based), ...],"ms":[latency ms, ...]}
//   anything else goes to the generator's loopCommand (its `target` line); stdin's end -> exit.
// A command line is 4 KiB at most (a longer one is refused once and skipped to its newline).
#define _GNU_SOURCE
#include "loopCore.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

Run run;
int epfd;
static int timerfd;

int64_t nowNs(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t dueOf(long i) { return run.start + (int64_t)((double)i * run.intervalNs + 0.5); }

void jsonSafe(char *text) {
  for (char *c = text; *c != '\0'; c++)
    if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) *c = '?';
}

void noteError(const char *format, ...) {
  run.errors++;
  if (run.firstError[0] != '\0') return;
  va_list args;
  va_start(args, format);
  vsnprintf(run.firstError, sizeof run.firstError, format, args);
  va_end(args);
  jsonSafe(run.firstError);
}

void noteAnswered(long i, int64_t now) {
  int64_t due = dueOf(i);
  if (due >= run.measureStart) run.latency[i] = (double)(now - due) / 1e6;
}

int connectResult(int fd) {
  int error = 0;
  socklen_t len = sizeof error;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) return errno;
  return error;
}

int writeRest(int fd, const void *buf, size_t len, size_t *at) {
  while (*at < len) {
    // write(2), not send(2): the bench counts a client's system calls from /proc/PID/io, whose syscw
    // counts write-family calls only (the Node loop's are). SIGPIPE is ignored: a gone peer is EPIPE.
    ssize_t n = write(fd, (const char *)buf + *at, len - *at);
    if (n > 0) {
      *at += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    if (n == 0) errno = 0;
    return -1;
  }
  return 1;
}

/** When the timer is set to fire (re-arming it to the same time would cost a system call a loop). */
static int64_t armedAt = -1;

static void armTimer(int64_t at) {
  if (at == armedAt) return;
  armedAt = at;
  struct itimerspec spec = { .it_value = { .tv_sec = at / 1000000000LL, .tv_nsec = at % 1000000000LL } };
  timerfd_settime(timerfd, TFD_TIMER_ABSTIME, &spec, NULL);
}

/** Output, grown as needed (a run's answer: ~40 bytes per measured request). */
static char *out;
static size_t outLen, outCap;

void emit(const char *format, ...) {
  for (;;) {
    va_list args;
    va_start(args, format);
    int n = vsnprintf(out + outLen, outCap - outLen, format, args);
    va_end(args);
    if (n < 0) return;
    if ((size_t)n < outCap - outLen) {
      outLen += (size_t)n;
      return;
    }
    size_t cap = outCap * 2 + (size_t)n + 64;
    char *bigger = realloc(out, cap);
    if (bigger == NULL) {
      fprintf(stderr, "%s: out of memory for the answer\n", loopName);
      exit(1);
    }
    out = bigger;
    outCap = cap;
  }
}

void flushLine(void) {
  emit("\n");
  for (size_t at = 0; at < outLen;) {
    ssize_t n = write(1, out + at, outLen - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) exit(0); // the bench is gone
    at += (size_t)n;
  }
  outLen = 0;
}

void answerError(const char *format, ...) {
  char message[MAX_ERROR];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof message, format, args);
  va_end(args);
  jsonSafe(message);
  emit("{\"error\":\"%s\"}", message);
  flushLine();
}

/** Handles the events one epoll_wait returned (`now`: when it returned). */
static void handleEvents(struct epoll_event *events, int n, int64_t now) {
  for (int k = 0; k < n; k++) {
    if (events[k].data.ptr == NULL) {
      armedAt = -1;
      uint64_t expirations;
      ssize_t ignored = read(timerfd, &expirations, sizeof expirations);
      (void)ignored;
      continue;
    }
    loopOnEvent(events[k].data.ptr, events[k].events, now);
  }
}

static void runLoop(long id, double rate, long ms, long warmupMs, long giveupMs) {
  if (!loopHasTarget(id)) return answerError("no target %ld", id);
  if (!(rate > 0 && rate <= 1000000)) return answerError("rate must be over 0 and at most 1000000");
  // Each bounded before they are added: sscanf clamps an over-long number to LONG_MAX, and a sum
  // past it would wrap negative, pass, and leave a run that never ends.
  if (ms < 0 || warmupMs < 0 || ms > 3600000 || warmupMs > 3600000 - ms || giveupMs < 0 || giveupMs > 600000) return answerError("bad durations");
  // Rounded as nodeLoad.ts's Math.round (no libm: the generators link nothing else).
  long total = (long)((double)(warmupMs + ms) / 1000.0 * rate + 0.5);
  if (total > MAX_REQUESTS) return answerError("over %ld requests in one run", MAX_REQUESTS);
  double *latency = malloc((size_t)(total > 0 ? total : 1) * sizeof(double));
  if (latency == NULL) return answerError("out of memory for %ld requests", total);
  for (long i = 0; i < total; i++) latency[i] = -1;
  run.total = total;
  run.next = run.queued = run.outstanding = run.maxOutstanding = run.errors = 0;
  run.firstError[0] = '\0';
  run.latency = latency;
  run.intervalNs = 1e9 / rate;
  // What happened since the last run first: an idle connection its server closed meanwhile is
  // dropped now, not handed the first request.
  struct epoll_event events[64];
  for (int n = 64; n == 64;) {
    n = epoll_wait(epfd, events, 64, 0);
    handleEvents(events, n, nowNs(CLOCK_MONOTONIC));
  }
  // CLOCK_MONOTONIC schedules; due times are reported on CLOCK_REALTIME through one offset.
  int64_t epochOffset = nowNs(CLOCK_REALTIME) - nowNs(CLOCK_MONOTONIC);
  run.start = nowNs(CLOCK_MONOTONIC) + 1000000;
  run.measureStart = run.start + (int64_t)warmupMs * 1000000;
  int64_t giveUpAt = (total > 0 ? dueOf(total - 1) : run.start) + (int64_t)giveupMs * 1000000;
  for (;;) {
    int64_t now = nowNs(CLOCK_MONOTONIC);
    while (run.next < total && dueOf(run.next) <= now) {
      run.next++;
      if (++run.outstanding > run.maxOutstanding) run.maxOutstanding = run.outstanding;
    }
    loopDispatch(id, now);
    if (run.next == total && run.outstanding == 0) break;
    if (run.next == total && now >= giveUpAt) {
      // What is still unanswered (waiting or sent) fails; the connections it is on go.
      long left = run.outstanding;
      run.errors += left;
      if (run.firstError[0] == '\0') snprintf(run.firstError, sizeof run.firstError, "%ld requests unanswered %ld ms after the last was due", left, giveupMs);
      loopAbandon(id);
      run.outstanding = 0;
      break;
    }
    armTimer(run.next < total ? dueOf(run.next) : giveUpAt);
    int n = epoll_wait(epfd, events, 64, -1);
    handleEvents(events, n, nowNs(CLOCK_MONOTONIC));
  }
  emit("{\"sent\":%ld,\"errors\":%ld,\"firstError\":", total, run.errors);
  if (run.firstError[0] == '\0') emit("null");
  else emit("\"%s\"", run.firstError);
  emit(",\"maxOutstanding\":%ld,\"dueMs\":[", run.maxOutstanding);
  int first = 1;
  for (long i = 0; i < total; i++)
    if (latency[i] >= 0) {
      emit(first ? "%.3f" : ",%.3f", (double)(dueOf(i) + epochOffset) / 1e6);
      first = 0;
    }
  emit("],\"ms\":[");
  first = 1;
  for (long i = 0; i < total; i++)
    if (latency[i] >= 0) {
      emit(first ? "%.3f" : ",%.3f", latency[i]);
      first = 0;
    }
  emit("]}");
  free(latency);
  run.latency = NULL;
  flushLine();
}

static void command(char *line) {
  long id, ms, warmupMs, giveupMs;
  double rate;
  char extra;
  if (strncmp(line, "run ", 4) == 0 && sscanf(line, "run %ld %lf %ld %ld %ld %c", &id, &rate, &ms, &warmupMs, &giveupMs, &extra) == 5)
    return runLoop(id, rate, ms, warmupMs, giveupMs);
  loopCommand(line);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  // Dies with the bench even if it is killed without closing our stdin.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (epfd < 0 || timerfd < 0) {
    fprintf(stderr, "%s: epoll/timerfd: %s\n", loopName, strerror(errno));
    return 1;
  }
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
  epoll_ctl(epfd, EPOLL_CTL_ADD, timerfd, &ev);
  static char line[MAX_COMMAND + 1];
  size_t len = 0;
  int skipping = 0;
  for (;;) {
    ssize_t n = read(0, line + len, MAX_COMMAND - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return 0;
    len += (size_t)n;
    char *nl;
    while ((nl = memchr(line, '\n', len)) != NULL) {
      *nl = '\0';
      if (!skipping) command(line);
      skipping = 0;
      len -= (size_t)(nl + 1 - line);
      memmove(line, nl + 1, len);
    }
    if (len == MAX_COMMAND) {
      // A line over the bound: refused once, the rest of it dropped up to its newline.
      if (!skipping) answerError("command line over %d bytes", MAX_COMMAND);
      skipping = 1;
      len = 0;
    }
  }
}
