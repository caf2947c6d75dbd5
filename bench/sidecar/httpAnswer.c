// The reader of HTTP/1.1 answers for the sidecar bench's C load generator (openLoop.c feeds it each
// connection's bytes as they are read): the status, the framing (Content-Length, chunked with
// trailers, or until close), keep-alive or close, and how many body bytes came. It keeps no body,
// only counts it; every length a peer chooses is bounded before it is trusted (the generator points
// at proxies under test, some broken on purpose), and a bad answer is an error text, never a crash.
#define _GNU_SOURCE
#include <string.h>
#include <strings.h>

#include "httpAnswer.h"

void answerReset(Answer *a) {
  a->phase = HEAD;
  a->status = 0;
  a->closeAfter = 0;
  a->remaining = 0;
  a->body = 0;
}

/** A header's value matches `token` (case-insensitive) as one of its comma-separated items. */
static int hasToken(const char *value, size_t len, const char *token) {
  size_t tl = strlen(token);
  size_t i = 0;
  while (i < len) {
    while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ',')) i++;
    size_t start = i;
    while (i < len && value[i] != ',') i++;
    size_t end = i;
    while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t')) end--;
    if (end - start == tl && strncasecmp(value + start, token, tl) == 0) return 1;
  }
  return 0;
}

/** Reads the header block in buf[0, headLen): status, framing, keep-alive. Returns an error or NULL. */
static const char *parseHead(Answer *a, size_t headLen) {
  char *p = a->buf;
  char *end = a->buf + headLen;
  // Exactly three digits (a fourth would read "2000" as 200): then the reason's space or the line's end.
  if (headLen < 13 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ' ||
      p[9] < '0' || p[9] > '9' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9' ||
      (p[12] != ' ' && p[12] != '\r' && p[12] != '\n'))
    return "malformed status line";
  int http10 = p[7] == '0';
  a->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
  long long length = -1;
  int chunked = 0, otherCoding = 0, keepAlive = 0;
  a->closeAfter = 0;
  char *line = memchr(p, '\n', (size_t)(end - p));
  while (line != NULL && line + 1 < end) {
    char *start = line + 1;
    char *eol = memchr(start, '\n', (size_t)(end - start));
    if (eol == NULL) break;
    char *stop = eol > start && eol[-1] == '\r' ? eol - 1 : eol;
    line = eol;
    if (stop == start) break;
    char *colon = memchr(start, ':', (size_t)(stop - start));
    if (colon == NULL || colon == start) return "malformed header line";
    size_t nameLen = (size_t)(colon - start);
    char *value = colon + 1;
    while (value < stop && (*value == ' ' || *value == '\t')) value++;
    size_t valueLen = (size_t)(stop - value);
    while (valueLen > 0 && (value[valueLen - 1] == ' ' || value[valueLen - 1] == '\t')) valueLen--;
    if (nameLen == 14 && strncasecmp(start, "content-length", 14) == 0) {
      if (valueLen == 0 || valueLen > 15) return "bad content-length";
      long long n = 0;
      for (size_t k = 0; k < valueLen; k++) {
        if (value[k] < '0' || value[k] > '9') return "bad content-length";
        n = n * 10 + (value[k] - '0');
      }
      if (length >= 0 && length != n) return "conflicting content-length headers";
      length = n;
    } else if (nameLen == 17 && strncasecmp(start, "transfer-encoding", 17) == 0) {
      // Chunked must be the last coding; any other framing means the body runs until close.
      chunked = valueLen >= 7 && strncasecmp(value + valueLen - 7, "chunked", 7) == 0;
      otherCoding = !chunked;
    } else if (nameLen == 10 && strncasecmp(start, "connection", 10) == 0) {
      if (hasToken(value, valueLen, "close")) a->closeAfter = 1;
      if (hasToken(value, valueLen, "keep-alive")) keepAlive = 1;
    }
  }
  if (http10 && !keepAlive) a->closeAfter = 1;
  if ((chunked || otherCoding) && length >= 0) return "both transfer-encoding and content-length";
  if (a->status == 204 || a->status == 304) {
    a->phase = BODY_LENGTH;
    a->remaining = 0;
  } else if (chunked) {
    a->phase = CHUNK_SIZE;
  } else if (length >= 0) {
    if (length > ANSWER_MAX_BODY) return "content-length over 1 MiB";
    a->phase = BODY_LENGTH;
    a->remaining = length;
  } else {
    a->phase = BODY_UNTIL_CLOSE;
    a->closeAfter = 1;
  }
  return NULL;
}

/** Counts `n` body bytes; an error once the body is over the bound. */
static const char *countBody(Answer *a, size_t n) {
  a->body += (long long)n;
  return a->body > ANSWER_MAX_BODY ? "body over 1 MiB" : NULL;
}

/** Takes what is here of the `remaining` body bytes (Content-Length's or a chunk's) from `avail`; advances *at. */
static const char *takeRemaining(Answer *a, size_t avail, size_t *at) {
  size_t n = avail < (size_t)a->remaining ? avail : (size_t)a->remaining;
  a->remaining -= (long long)n;
  *at += n;
  return countBody(a, n);
}

/** Where the line starting at buf[from] ends (its '\n'), or NULL while it is incomplete. */
static char *lineEnd(Answer *a, size_t from) { return memchr(a->buf + from, '\n', a->len - from); }

/** See httpAnswer.h. Each phase consumes from buf[at]; what a phase needs whole waits in buf. */
enum Parsed answerParse(Answer *a, const char **error) {
  size_t at = 0;
  enum Parsed result = NEED_MORE;
  for (;;) {
    size_t avail = a->len - at;
    if (a->phase == HEAD) {
      char *end = avail >= 4 ? memmem(a->buf + at, avail, "\r\n\r\n", 4) : NULL;
      if (end == NULL) {
        if (avail >= ANSWER_MAX_HEAD) return *error = "header block over 16384 bytes", FAILED;
        break;
      }
      size_t headLen = (size_t)(end + 4 - (a->buf + at));
      if (at != 0) {
        memmove(a->buf, a->buf + at, a->len - at);
        a->len -= at;
        at = 0;
      }
      if ((*error = parseHead(a, headLen)) != NULL) return FAILED;
      at = headLen;
      // An interim answer (100 Continue): the real one follows.
      if (a->status >= 100 && a->status < 200 && a->status != 101) a->phase = HEAD;
      else if (a->status == 101) return *error = "status 101 (an upgrade)", FAILED;
    } else if (a->phase == BODY_LENGTH) {
      if ((*error = takeRemaining(a, avail, &at)) != NULL) return FAILED;
      if (a->remaining > 0) break;
      result = COMPLETE;
      break;
    } else if (a->phase == BODY_UNTIL_CLOSE) {
      at += avail;
      if ((*error = countBody(a, avail)) != NULL) return FAILED;
      break;
    } else if (a->phase == CHUNK_SIZE) {
      char *eol = lineEnd(a, at);
      if (eol == NULL) {
        if (avail > ANSWER_MAX_CHUNK_LINE) return *error = "chunk-size line over 1024 bytes", FAILED;
        break;
      }
      char *p = a->buf + at;
      long long size = 0;
      int digits = 0;
      for (; p < eol; p++, digits++) {
        int d = *p >= '0' && *p <= '9' ? *p - '0' : (*p | 0x20) >= 'a' && (*p | 0x20) <= 'f' ? (*p | 0x20) - 'a' + 10 : -1;
        if (d < 0) break;
        if (digits >= 8) return *error = "chunk size too large", FAILED;
        size = size * 16 + d;
      }
      if (digits == 0 || (p < eol && *p != ';' && *p != '\r' && *p != ' ' && *p != '\t')) return *error = "bad chunk size", FAILED;
      at = (size_t)(eol + 1 - a->buf);
      if (size == 0) a->phase = TRAILERS;
      else {
        a->phase = CHUNK_DATA;
        a->remaining = size;
      }
    } else if (a->phase == CHUNK_DATA) {
      if ((*error = takeRemaining(a, avail, &at)) != NULL) return FAILED;
      if (a->remaining > 0) break;
      a->phase = CHUNK_END;
    } else if (a->phase == CHUNK_END) {
      if (avail < 2) break;
      if (memcmp(a->buf + at, "\r\n", 2) != 0) return *error = "no CRLF after chunk data", FAILED;
      at += 2;
      a->phase = CHUNK_SIZE;
    } else {
      // TRAILERS: lines until an empty one; all of them must fit the buffer.
      char *eol = lineEnd(a, at);
      if (eol == NULL) {
        if (avail >= ANSWER_MAX_HEAD) return *error = "trailers over 16384 bytes", FAILED;
        break;
      }
      size_t lineLen = (size_t)(eol - (a->buf + at));
      at = (size_t)(eol + 1 - a->buf);
      if (lineLen == 0 || (lineLen == 1 && eol[-1] == '\r')) {
        result = COMPLETE;
        break;
      }
    }
  }
  memmove(a->buf, a->buf + at, a->len - at);
  a->len -= at;
  return result;
}
