/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The monitor's server over a real Unix socket, in process: events
 * for a client that never reads are bounded (it is disconnected with
 * the reason logged) while a client that reads gets every event.
 */
#include <config.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "qmp.h"
#include "server.h"

/* The nbdkit server functions the library calls. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_error[256];

void
nbdkit_debug (const char *fmt, ...)
{
}

void
nbdkit_error (const char *fmt, ...)
{
  va_list ap;

  pthread_mutex_lock (&log_lock);
  va_start (ap, fmt);
  vsnprintf (last_error, sizeof last_error, fmt, ap);
  va_end (ap);
  pthread_mutex_unlock (&log_lock);
}

char *
nbdkit_absolute_path (const char *path)
{
  return strdup (path);
}

void
nbdkit_shutdown (void)
{
}

#define FAIL(...) do { fprintf (stderr, __VA_ARGS__); exit (EXIT_FAILURE); } while (0)

static int
connect_to (const char *path)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  int fd = socket (AF_UNIX, SOCK_STREAM, 0);

  strncpy (addr.sun_path, path, sizeof addr.sun_path - 1);
  if (fd == -1 || connect (fd, (struct sockaddr *) &addr, sizeof addr) == -1)
    FAIL ("connect: %m\n");
  return fd;
}

/* Read one line (a message) into BUF. */
static void
read_line (int fd, char *buf, size_t n)
{
  size_t i = 0;

  while (i < n - 1) {
    if (read (fd, buf + i, 1) != 1)
      FAIL ("read: closed\n");
    if (buf[i++] == '\n')
      break;
  }
  buf[i] = '\0';
}

static int
negotiated_client (const char *path)
{
  char buf[4096];
  int fd = connect_to (path);
  const char *cap = "{\"execute\":\"qmp_capabilities\"}";

  read_line (fd, buf, sizeof buf);
  if (strstr (buf, "\"QMP\"") == NULL)
    FAIL ("greeting: %s\n", buf);
  if (write (fd, cap, strlen (cap)) != (ssize_t) strlen (cap))
    FAIL ("write: %m\n");
  read_line (fd, buf, sizeof buf);
  if (strcmp (buf, "{\"return\":{}}\r\n") != 0)
    FAIL ("qmp_capabilities: %s\n", buf);
  return fd;
}

#define EVENTS 40000            /* about 8 MiB of events */
/* The fast client is never more than this many events behind (about
 * 400 KiB, well under the backlog limit), however slowly its thread
 * gets scheduled; the slow one falls behind by all of them.
 */
#define MAX_BEHIND 2000
static char padding[128];
static long received;           /* by the reader; atomic */

/* The reader: every event, in order. */
static void *
reader (void *arg)
{
  int fd = * (int *) arg;
  FILE *fp = fdopen (fd, "r");
  char line[1024];
  long want = 0;

  while (want < EVENTS && fgets (line, sizeof line, fp)) {
    const char *p = strstr (line, "\"seq\":");
    if (p == NULL || atol (p + 6) != want)
      FAIL ("reader: expected event %ld, got %s", want, line);
    want++;
    __atomic_store_n (&received, want, __ATOMIC_RELEASE);
  }
  if (want != EVENTS)
    FAIL ("reader: got %ld of %d events\n", want, EVENTS);
  fclose (fp);
  return NULL;
}

int
main (void)
{
  char dir[] = "/tmp/qmp-server-XXXXXX", path[64], buf[65536];
  int slow, fast;
  long i, got = 0;
  ssize_t r;
  pthread_t t;

  memset (padding, 'p', sizeof padding - 1);
  if (mkdtemp (dir) == NULL)
    FAIL ("mkdtemp: %m\n");
  snprintf (path, sizeof path, "%s/q.sock", dir);
  if (qmp_server_listen (path) == -1 || qmp_server_start () == -1)
    FAIL ("server: %s\n", last_error);
  slow = negotiated_client (path);
  fast = negotiated_client (path);
  pthread_create (&t, NULL, reader, &fast);

  for (i = 0; i < EVENTS; i++) {
    while (i - __atomic_load_n (&received, __ATOMIC_ACQUIRE) > MAX_BEHIND)
      usleep (1000);
    qmp_emit_event ("TEST_EVENT", json_pack ("{s:I,s:s}", "seq",
                                             (json_int_t) i, "pad", padding));
  }
  pthread_join (t, NULL);

  /* The slow client got a prefix of the events, then the end. */
  for (;;) {
    struct pollfd pfd = { .fd = slow, .events = POLLIN };
    if (poll (&pfd, 1, 10000) != 1)
      FAIL ("the client that does not read was not disconnected\n");
    r = read (slow, buf, sizeof buf);
    if (r <= 0)
      break;
    for (ssize_t j = 0; j < r; j++)
      got += buf[j] == '\n';
  }
  pthread_mutex_lock (&log_lock);
  if (strstr (last_error, "a client was disconnected: it does not read "
              "its events") == NULL)
    FAIL ("no reason logged: '%s'\n", last_error);
  pthread_mutex_unlock (&log_lock);
  if (got >= EVENTS)
    FAIL ("the slow client got all %ld events\n", got);
  printf ("slow client: disconnected after %ld of %d events\n", got, EVENTS);

  qmp_server_stop ();
  close (slow);
  rmdir (dir);
  printf ("1 passed, 0 failed\n");
  return EXIT_SUCCESS;
}
