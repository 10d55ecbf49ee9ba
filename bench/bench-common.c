/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "bench-common.h"

int
parse_size (const char *s, uint64_t *ret)
{
  char *end;
  unsigned long long v;
  unsigned shift = 0;

  errno = 0;
  v = strtoull (s, &end, 10);
  if (errno || end == s)
    return -1;
  switch (*end) {
  case '\0': break;
  case 'k': case 'K': shift = 10; end++; break;
  case 'm': case 'M': shift = 20; end++; break;
  case 'g': case 'G': shift = 30; end++; break;
  case 't': case 'T': shift = 40; end++; break;
  default: return -1;
  }
  if (*end != '\0' || (shift && v > (UINT64_MAX >> shift)))
    return -1;
  *ret = (uint64_t) v << shift;
  return 0;
}

static uint64_t rng_state;

void
rng_seed (uint64_t seed)
{
  rng_state = seed;
}

uint64_t
rng_next (void)
{
  uint64_t z = (rng_state += UINT64_C (0x9e3779b97f4a7c15));

  z = (z ^ (z >> 30)) * UINT64_C (0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C (0x94d049bb133111eb);
  return z ^ (z >> 31);
}

uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct nbd_handle *
bench_nbd_connect (const char *target)
{
  struct nbd_handle *h = nbd_create ();
  int r;

  if (h == NULL) {
    fprintf (stderr, "nbd_create: %s\n", nbd_get_error ());
    return NULL;
  }
  if (strncmp (target, "nbd", 3) == 0 && strstr (target, "://"))
    r = nbd_connect_uri (h, target);
  else
    r = nbd_connect_unix (h, target);
  if (r == -1) {
    fprintf (stderr, "connecting to %s: %s\n", target, nbd_get_error ());
    nbd_close (h);
    return NULL;
  }
  return h;
}

struct qmp {
  int fd;
  char *buf;                    /* received bytes not yet returned */
  size_t len, cap;
  char *line;                   /* the last line returned */
};

/* The next newline-terminated line, without the newline; NULL on EOF. */
static const char *
qmp_read_line (struct qmp *q)
{
  char *nl;
  ssize_t r;

  for (;;) {
    nl = q->len ? memchr (q->buf, '\n', q->len) : NULL;
    if (nl) {
      size_t n = nl - q->buf;
      free (q->line);
      q->line = malloc (n + 1);
      if (q->line == NULL) {
        perror ("malloc");
        exit (1);
      }
      memcpy (q->line, q->buf, n);
      q->line[n] = '\0';
      memmove (q->buf, nl + 1, q->len - n - 1);
      q->len -= n + 1;
      return q->line;
    }
    if (q->cap - q->len < 65536) {
      q->cap = q->cap * 2 + 65536;
      q->buf = realloc (q->buf, q->cap);
      if (q->buf == NULL) {
        perror ("realloc");
        exit (1);
      }
    }
    r = read (q->fd, q->buf + q->len, q->cap - q->len);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0)
      return NULL;
    q->len += r;
  }
}

static int
write_all (int fd, const char *p, size_t n)
{
  while (n > 0) {
    ssize_t r = write (fd, p, n);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += r;
    n -= r;
  }
  return 0;
}

struct qmp *
qmp_connect (const char *path)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  struct qmp *q = calloc (1, sizeof *q);

  if (q == NULL || strlen (path) >= sizeof addr.sun_path) {
    fprintf (stderr, "qmp: bad socket path %s\n", path);
    exit (1);
  }
  strcpy (addr.sun_path, path);
  q->fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (q->fd == -1 ||
      connect (q->fd, (struct sockaddr *) &addr, sizeof addr) == -1) {
    fprintf (stderr, "qmp: connect %s: %s\n", path, strerror (errno));
    exit (1);
  }
  if (qmp_read_line (q) == NULL || strstr (q->line, "\"QMP\"") == NULL) {
    fprintf (stderr, "qmp: no greeting on %s\n", path);
    exit (1);
  }
  qmp_must (q, "{\"execute\":\"qmp_capabilities\"}");
  return q;
}

void
qmp_close (struct qmp *q)
{
  if (q) {
    close (q->fd);
    free (q->buf);
    free (q->line);
    free (q);
  }
}

const char *
qmp_execute (struct qmp *q, const char *cmd, bool *is_error)
{
  const char *line;

  if (write_all (q->fd, cmd, strlen (cmd)) == -1 ||
      write_all (q->fd, "\n", 1) == -1)
    return NULL;
  /* Events carry "event"; the answer carries "return" or "error" at
   * the top level, which is the only other kind of message.
   */
  while ((line = qmp_read_line (q)) != NULL) {
    if (strstr (line, "\"event\"") && strstr (line, "\"timestamp\""))
      continue;
    *is_error = strstr (line, "\"return\"") == NULL;
    return line;
  }
  return NULL;
}

const char *
qmp_must (struct qmp *q, const char *cmd)
{
  bool is_error;
  const char *line = qmp_execute (q, cmd, &is_error);

  if (line == NULL) {
    fprintf (stderr, "qmp: connection lost on %s\n", cmd);
    exit (1);
  }
  if (is_error) {
    fprintf (stderr, "qmp: %s\n  -> %s\n", cmd, line);
    exit (1);
  }
  return line;
}

void
proc_rss (int pid, uint64_t *rss_kib, uint64_t *hwm_kib)
{
  char path[64], line[256];
  FILE *f;

  *rss_kib = *hwm_kib = 0;
  snprintf (path, sizeof path, "/proc/%d/status", pid);
  f = fopen (path, "r");
  if (f == NULL)
    return;
  while (fgets (line, sizeof line, f)) {
    if (strncmp (line, "VmRSS:", 6) == 0)
      *rss_kib = strtoull (line + 6, NULL, 10);
    else if (strncmp (line, "VmHWM:", 6) == 0)
      *hwm_kib = strtoull (line + 6, NULL, 10);
  }
  fclose (f);
}

/* utime + stime of PID in ms, or -1. */
double
proc_cpu_ms (int pid)
{
  char path[64], buf[1024], *p;
  unsigned long long ut, st;
  FILE *f;
  size_t n;

  snprintf (path, sizeof path, "/proc/%d/stat", pid);
  f = fopen (path, "r");
  if (f == NULL)
    return -1;
  n = fread (buf, 1, sizeof buf - 1, f);
  fclose (f);
  buf[n] = '\0';
  /* Fields after the command name, which ends with the last ')'. */
  p = strrchr (buf, ')');
  if (p == NULL ||
      sscanf (p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
              &ut, &st) != 2)
    return -1;
  return (ut + st) * 1000.0 / sysconf (_SC_CLK_TCK);
}

static int
cmp_double (const void *a, const void *b)
{
  double x = * (const double *) a, y = * (const double *) b;

  return x < y ? -1 : x > y;
}

double
stat_quantile (double *v, size_t n, double q)
{
  double pos;
  size_t i;

  if (n == 0)
    return 0;
  qsort (v, n, sizeof *v, cmp_double);
  pos = q * (n - 1);
  i = (size_t) pos;
  if (i + 1 >= n)
    return v[n - 1];
  return v[i] + (pos - i) * (v[i + 1] - v[i]);
}
