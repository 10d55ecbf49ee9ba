/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The monitor's socket: one accept thread, one thread per client.
 *
 * A client thread reads its requests, runs them (handlers take the
 * monitor lock) and writes from its own output queue without blocking,
 * so a client that stops reading stalls only itself; while its
 * replies wait, its requests are not read (see OUT_HIGH).
 *
 * Lock order: the monitor lock (qmp.c), then clients_lock, then a
 * client's out_lock.  No lock here is ever held across a blocking call.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "cleanup.h"
#include "qmp.h"
#include "server.h"
#include "session.h"
#include "internal.h"
#include "listen.h"
#include "tls.h"

/* Backpressure: while more than OUT_HIGH bytes of a client's output
 * wait, its input is left unread (in its buffer, then in the socket),
 * so a client that sends and never reads holds at most OUT_HIGH + one
 * reply, and nothing is dropped.  Events do not wait for a client: one
 * that lets more than MAX_EVENT_BACKLOG pile up is disconnected, with
 * the reason logged.
 */
#define OUT_HIGH (256 * 1024)
#define MAX_EVENT_BACKLOG (OUT_HIGH + 1024 * 1024)
#define IN_SIZE 65536
/* Refused clients (over qmp-max-clients) being told why at once. */
#define MAX_REFUSING 16

struct client {
  struct client *next;
  int fd;
  struct qmp_tls *tls;          /* on TCP */
  int wake_fd;                  /* eventfd: output was queued */
  pthread_t thread;
  struct qmp_session session;
  bool tcp;                      /* needs TLS */
  bool refused;                 /* over the limit: told why, then closed */
  bool eof;                     /* the client sent all it will */
  char in[IN_SIZE];             /* read, not yet run: in[in_off..in_len) */
  size_t in_off, in_len;
  pthread_mutex_t out_lock;     /* protects the fields below */
  char *out;                    /* to send: out[out_off..out_len) */
  size_t out_off, out_len, out_cap;
  bool negotiated;              /* copy of session.negotiated, for events */
  const char *gone;             /* why it is being disconnected */
  bool done;                    /* thread finished; may be reaped */
};

/* Parameters (qmp_server_config). */
#define MAX_CLIENTS_LIMIT 1024  /* one thread each */
static unsigned max_clients = 64;

int
qmp_server_config (const char *key, const char *value, char **address)
{
  if (strcmp (key, "qmp") == 0) {
    /* nbdkit changes to / when it becomes a daemon. */
    char *a = strncmp (value, "tcp:", 4) == 0 ? strdup (value)
                                               : nbdkit_absolute_path (value);

    if (a == NULL)
      return -1;
    free (*address);
    *address = a;
    return 1;
  }
  if (strcmp (key, "qmp-max-clients") == 0) {
    char *end;
    unsigned long n;

    errno = 0;
    n = strtoul (value, &end, 10);
    if (errno || end == value || *end || value[0] == '-' ||
        n < 1 || n > MAX_CLIENTS_LIMIT) {
      nbdkit_error ("qmp-max-clients=%s: expected a number from 1 to %d",
                    value, MAX_CLIENTS_LIMIT);
      return -1;
    }
    max_clients = n;
    return 1;
  }
  return qmp_tls_config (key, value);
}

static char *socket_path;
static int listen_fd = -1;
static int stop_fd = -1;        /* eventfd: the server is stopping */
static pthread_t accept_thread;
static bool running;

static pthread_mutex_t clients_lock = PTHREAD_MUTEX_INITIALIZER;
static struct client *clients;

int
qmp_server_listen (const char *address)
{
  bool tcp = strncmp (address, "tcp:", 4) == 0;

  if (tcp && !qmp_tls_configured ()) {
    nbdkit_error ("qmp=%s: a monitor on TCP needs TLS: give "
                  "qmp-tls-certificates=DIR or qmp-tls-psk=FILE", address);
    return -1;
  }
  if (!tcp && qmp_tls_configured ()) {
    nbdkit_error ("qmp-tls-certificates and qmp-tls-psk are for "
                  "qmp=tcp:ADDRESS:PORT, not for a Unix socket");
    return -1;
  }
  if (tcp) {
    if (qmp_tls_load () == -1)
      return -1;
    listen_fd = qmp_listen_tcp (address + 4);
  }
  else {
    listen_fd = qmp_listen_unix (address);
    if (listen_fd >= 0 && (socket_path = strdup (address)) == NULL) {
      nbdkit_error ("strdup: %m");
      close (listen_fd);
      listen_fd = -1;
      unlink (address);
    }
  }
  if (listen_fd == -1)
    return -1;
  qmp_register_builtins ();
  return 0;
}

/* Queue MSG and a line end for C and wake its thread.  An EVENT that
 * would pass the backlog limit disconnects C instead.
 */
static void
queue (struct client *c, const char *msg, bool event)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->out_lock);
  size_t n = strlen (msg), pending = c->out_len - c->out_off;
  uint64_t one = 1;

  if (c->gone)
    return;
  if (event && pending + n + 2 > MAX_EVENT_BACKLOG)
    c->gone = "it does not read its events (over 1.25 MiB wait)";
  else {
    if (c->out_len + n + 2 > c->out_cap && c->out_off > 0) {
      memmove (c->out, c->out + c->out_off, pending);
      c->out_off = 0;
      c->out_len = pending;
    }
    if (c->out_len + n + 2 > c->out_cap) {
      size_t cap = c->out_cap ? c->out_cap : 4096;
      char *p;

      while (cap < c->out_len + n + 2)
        cap *= 2;
      p = realloc (c->out, cap);
      if (p == NULL) {
        c->gone = "out of memory for its replies";
        goto wake;
      }
      c->out = p;
      c->out_cap = cap;
    }
    memcpy (c->out + c->out_len, msg, n);
    memcpy (c->out + c->out_len + n, "\r\n", 2);
    c->out_len += n + 2;
  }
 wake:
  if (write (c->wake_fd, &one, sizeof one) == -1)
    nbdkit_debug ("qmp: eventfd write: %m");
}

static void
send_to_client (void *opaque, const char *msg)
{
  queue (opaque, msg, false);
}

/* Too much output waits: read no more input for now. */
static bool
hold_input (void *opaque)
{
  struct client *c = opaque;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->out_lock);

  return c->out_len - c->out_off > OUT_HIGH;
}

static ssize_t
conn_send (struct client *c, const char *buf, size_t n)
{
  if (c->tls)
    return qmp_tls_send (c->tls, buf, n);
  return send (c->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static ssize_t
conn_recv (struct client *c, char *buf, size_t n)
{
  if (c->tls)
    return qmp_tls_recv (c->tls, buf, n);
  return recv (c->fd, buf, n, MSG_DONTWAIT);
}

/* TLS: the handshake, within a time limit.  False if it failed. */
#define HANDSHAKE_TIMEOUT_MS 10000
static bool
handshake (struct client *c)
{
  int fl = fcntl (c->fd, F_GETFL), r, waited = 0;

  if (fl == -1 || fcntl (c->fd, F_SETFL, fl | O_NONBLOCK) == -1 ||
      (c->tls = qmp_tls_new (c->fd)) == NULL)
    return false;
  while ((r = qmp_tls_handshake (c->tls)) == 0) {
    struct pollfd fds[2] = {
      { .fd = c->fd,
        .events = qmp_tls_wants_write (c->tls) ? POLLOUT : POLLIN },
      { .fd = stop_fd, .events = POLLIN },
    };
    if (waited >= HANDSHAKE_TIMEOUT_MS)
      return false;
    r = poll (fds, 2, 100);
    if ((r == -1 && errno != EINTR) || fds[1].revents)
      return false;
    if (r == 0)
      waited += 100;
  }
  return r == 1;
}

/* Write what the socket takes now.  False when the client is gone. */
static bool
flush_some (struct client *c)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->out_lock);
  ssize_t r;

  if (c->gone)
    return false;
  while (c->out_off < c->out_len) {
    r = conn_send (c, c->out + c->out_off, c->out_len - c->out_off);
    if (r == -1)
      return errno == EAGAIN || errno == EINTR;
    c->out_off += r;
  }
  c->out_off = c->out_len = 0;
  /* An idle client keeps no large buffer. */
  if (c->out_cap > 65536) {
    free (c->out);
    c->out = NULL;
    c->out_cap = 0;
  }
  return true;
}

static bool
has_output (struct client *c)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->out_lock);
  return c->out_off < c->out_len;
}

/* Run what was read, as far as backpressure allows.  False when the
 * client must go.
 */
static bool
run_input (struct client *c)
{
  ssize_t r;

  if (c->in_off == c->in_len || hold_input (c))
    return true;
  r = qmp_session_feed (&c->session, c->in + c->in_off,
                        c->in_len - c->in_off);
  if (r == -1)
    return false;
  c->in_off += r;
  if (c->in_off == c->in_len)
    c->in_off = c->in_len = 0;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->out_lock);
  c->negotiated = c->session.negotiated;
  return true;
}

/* Read more input.  False when the client is gone. */
static bool
read_input (struct client *c)
{
  ssize_t r = conn_recv (c, c->in, sizeof c->in);

  if (r == -1)
    return errno == EAGAIN || errno == EINTR;
  if (r == 0)
    c->eof = true;
  else
    c->in_len = r;
  return true;
}

/* Tell a client over the limit why, then let it go. */
static void
refuse (struct client *c)
{
  CLEANUP_FREE char *msg = NULL;
  struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };

  if (asprintf (&msg, "{\"error\": {\"class\": \"GenericError\", "
                "\"desc\": \"Too many QMP clients: at most %u "
                "(qmp-max-clients)\"}}", max_clients) == -1)
    return;
  nbdkit_debug ("qmp: client refused: already %u", max_clients);
  queue (c, msg, false);
  while (has_output (c) && flush_some (c) &&
         poll (&pfd, 1, 1000) == 1)
    ;
}

static void *
client_thread (void *arg)
{
  struct client *c = arg;
  uint64_t n;

  if (c->tcp && !handshake (c))
    goto out;
  if (c->refused) {
    refuse (c);
    goto out;
  }
  qmp_session_greet (&c->session);
  for (;;) {
    bool want_in, out;

    if (!run_input (c))
      break;
    want_in = !c->eof && c->in_off == c->in_len;
    out = has_output (c);
    if (c->eof && c->in_off == c->in_len && !out)
      break;                    /* all answered */
    if (!want_in && c->in_off < c->in_len && !hold_input (c))
      continue;                 /* the rest of the input runs now */
    if (want_in && c->tls && qmp_tls_pending (c->tls)) {
      if (!read_input (c))      /* decrypted already: poll won't say */
        break;
      continue;
    }
    struct pollfd fds[3] = {
      { .fd = c->fd, .events = (want_in ? POLLIN : 0) | (out ? POLLOUT : 0) },
      { .fd = c->wake_fd, .events = POLLIN },
      { .fd = stop_fd, .events = POLLIN },
    };
    if (poll (fds, 3, -1) == -1 && errno != EINTR)
      break;
    if (fds[2].revents)
      break;
    if (fds[1].revents && read (c->wake_fd, &n, sizeof n) == -1)
      break;
    if (fds[0].revents & (POLLHUP | POLLERR | POLLNVAL) && !want_in)
      break;                    /* nobody there to answer */
    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) && !read_input (c))
      break;
    if (!flush_some (c))
      break;
  }
  /* Best effort to deliver the last replies (e.g. to quit). */
  if (flush_some (c) && c->tls)
    qmp_tls_bye (c->tls);
 out:
  shutdown (c->fd, SHUT_RDWR);
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->out_lock);
    if (c->gone)
      nbdkit_error ("qmp: a client was disconnected: %s", c->gone);
  }
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&clients_lock);
  c->done = true;
  return NULL;
}

static void
free_client (struct client *c)
{
  qmp_tls_free (c->tls);
  close (c->fd);
  close (c->wake_fd);
  qmp_session_free (&c->session);
  pthread_mutex_destroy (&c->out_lock);
  free (c->out);
  free (c);
}

/* Join and free the clients whose threads have finished. */
static void
reap_clients (bool all)
{
  struct client **pp, *c, *dead = NULL;

  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&clients_lock);
    for (pp = &clients; (c = *pp) != NULL; ) {
      if (c->done || all) {
        *pp = c->next;
        c->next = dead;
        dead = c;
      }
      else
        pp = &c->next;
    }
  }
  while ((c = dead) != NULL) {
    dead = c->next;
    pthread_join (c->thread, NULL);
    free_client (c);
  }
}

/* Live clients, and those being refused.  Call with clients_lock. */
static void
count_clients (unsigned *served, unsigned *refusing)
{
  struct client *c;

  *served = *refusing = 0;
  for (c = clients; c; c = c->next)
    if (!c->done)
      ++*(c->refused ? refusing : served);
}

static void
add_client (int fd)
{
  struct client *c;
  unsigned served, refusing;
  int err;

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&clients_lock);
  count_clients (&served, &refusing);
  if (served >= max_clients && refusing >= MAX_REFUSING) {
    close (fd);                 /* a flood: no more threads for it */
    return;
  }
  c = calloc (1, sizeof *c);
  if (c == NULL || (c->wake_fd = eventfd (0, EFD_CLOEXEC)) == -1) {
    nbdkit_error ("qmp: new client: %m");
    free (c);
    close (fd);
    return;
  }
  c->fd = fd;
  c->tcp = socket_path == NULL;
  c->refused = served >= max_clients;
  pthread_mutex_init (&c->out_lock, NULL);
  qmp_session_init (&c->session, send_to_client, c);
  c->session.hold = hold_input;
  err = pthread_create (&c->thread, NULL, client_thread, c);
  if (err) {
    errno = err;
    nbdkit_error ("qmp: client thread: %m");
    free_client (c);
    return;
  }
  c->next = clients;
  clients = c;
}

static void *
accept_loop (void *arg)
{
  for (;;) {
    struct pollfd fds[2] = {
      { .fd = listen_fd, .events = POLLIN },
      { .fd = stop_fd, .events = POLLIN },
    };
    int fd;

    if (poll (fds, 2, -1) == -1 && errno != EINTR)
      break;
    if (fds[1].revents)
      break;
    reap_clients (false);
    if (!(fds[0].revents & POLLIN))
      continue;
    fd = accept4 (listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd == -1) {
      if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
        nbdkit_debug ("qmp: accept: %m");
      continue;
    }
    if (__atomic_load_n (&qmp_shutting_down, __ATOMIC_SEQ_CST))
      close (fd);               /* after quit: no new clients */
    else
      add_client (fd);
  }
  return NULL;
}

int
qmp_server_start (void)
{
  int err;

  if (listen_fd == -1)
    return 0;
  stop_fd = eventfd (0, EFD_CLOEXEC);
  if (stop_fd == -1) {
    nbdkit_error ("qmp: eventfd: %m");
    return -1;
  }
  err = pthread_create (&accept_thread, NULL, accept_loop, NULL);
  if (err) {
    errno = err;
    nbdkit_error ("qmp: monitor thread: %m");
    return -1;
  }
  running = true;
  return 0;
}

void
qmp_server_stop (void)
{
  uint64_t one = 1;

  if (running) {
    if (write (stop_fd, &one, sizeof one) == -1)
      nbdkit_debug ("qmp: eventfd write: %m");
    pthread_join (accept_thread, NULL);
    reap_clients (true);
    running = false;
  }
  if (listen_fd >= 0) {
    close (listen_fd);
    listen_fd = -1;
    if (socket_path)
      unlink (socket_path);
  }
  if (stop_fd >= 0) {
    close (stop_fd);
    stop_fd = -1;
  }
  free (socket_path);
  socket_path = NULL;
  qmp_tls_unload ();
}

json_t *
qmp_event_new (const char *name, json_t *data)
{
  struct timeval tv;
  json_t *ev;

  gettimeofday (&tv, NULL);
  ev = json_pack ("{s:s,s:{s:I,s:I}}", "event", name, "timestamp",
                  "seconds", (json_int_t) tv.tv_sec,
                  "microseconds", (json_int_t) tv.tv_usec);
  if (data)
    json_object_set_new (ev, "data", data);
  return ev;
}

void
qmp_server_emit_event (const char *name, json_t *data)
{
  json_t *ev = qmp_event_new (name, data);
  CLEANUP_FREE char *text = json_dumps (ev, JSON_COMPACT);
  struct client *c;

  json_decref (ev);
  nbdkit_debug ("qmp: event %s", name);
  if (text == NULL)
    return;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&clients_lock);
  for (c = clients; c; c = c->next) {
    bool negotiated;
    {
      ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->out_lock);
      negotiated = c->negotiated;
    }
    if (negotiated && !c->done)
      queue (c, text, true);
  }
}
