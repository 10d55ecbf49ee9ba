/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The monitor's Unix socket: one accept thread, one thread per client.
 *
 * A client thread reads its requests, runs them (handlers take the
 * monitor lock) and writes from its own output queue without blocking,
 * so a client that stops reading stalls only itself: events for it
 * pile up in its queue until a limit, then it is disconnected.
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

/* A client that lets this much output pile up is disconnected. */
#define MAX_QUEUED (16 * 1024 * 1024)

struct client {
  struct client *next;
  int fd;
  int wake_fd;                  /* eventfd: output was queued */
  pthread_t thread;
  struct qmp_session session;
  pthread_mutex_t out_lock;     /* protects the fields below */
  char *out;
  size_t out_len, out_off;
  bool negotiated;              /* copy of session.negotiated, for events */
  bool overflow;
  bool done;                    /* thread finished; may be reaped */
};

static char *socket_path;
static int listen_fd = -1;
static int stop_fd = -1;        /* eventfd: the server is stopping */
static pthread_t accept_thread;
static bool running;

static pthread_mutex_t clients_lock = PTHREAD_MUTEX_INITIALIZER;
static struct client *clients;

/* Is PATH a socket nobody listens on (left behind by a crash)? */
static bool
is_stale_socket (const char *path)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  int fd, r;

  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1)
    return false;
  strncpy (addr.sun_path, path, sizeof addr.sun_path - 1);
  r = connect (fd, (struct sockaddr *) &addr, sizeof addr);
  close (fd);
  return r == -1 && errno == ECONNREFUSED;
}

static int
check_path (const char *path)
{
  struct stat st;

  if (strlen (path) >= sizeof ((struct sockaddr_un *) 0)->sun_path) {
    nbdkit_error ("qmp: socket path too long: %s", path);
    return -1;
  }
  if (lstat (path, &st) == -1)
    return 0;
  if (!S_ISSOCK (st.st_mode)) {
    nbdkit_error ("qmp: %s exists and is not a socket", path);
    return -1;
  }
  if (!is_stale_socket (path)) {
    nbdkit_error ("qmp: %s is in use by another process", path);
    return -1;
  }
  if (unlink (path) == -1) {
    nbdkit_error ("qmp: cannot remove stale socket %s: %m", path);
    return -1;
  }
  return 0;
}

int
qmp_server_listen (const char *path)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };

  if (check_path (path) == -1)
    return -1;
  listen_fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd == -1) {
    nbdkit_error ("qmp: socket: %m");
    return -1;
  }
  strncpy (addr.sun_path, path, sizeof addr.sun_path - 1);
  /* chmod between bind and listen: nobody can connect before listen. */
  if (bind (listen_fd, (struct sockaddr *) &addr, sizeof addr) == -1 ||
      chmod (path, 0600) == -1 ||
      listen (listen_fd, 16) == -1) {
    nbdkit_error ("qmp: %s: %m", path);
    close (listen_fd);
    listen_fd = -1;
    return -1;
  }
  socket_path = strdup (path);
  qmp_register_builtins ();
  return 0;
}

/* Queue MSG and a line end for C; wake its thread if not ours. */
static void
queue (struct client *c, const char *msg)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->out_lock);
  size_t n = strlen (msg), need = c->out_len + n + 2;
  uint64_t one = 1;
  char *p;

  if (c->overflow)
    return;
  if (need - c->out_off > MAX_QUEUED || (p = realloc (c->out, need)) == NULL) {
    c->overflow = true;
  }
  else {
    c->out = p;
    memcpy (c->out + c->out_len, msg, n);
    memcpy (c->out + c->out_len + n, "\r\n", 2);
    c->out_len += n + 2;
  }
  if (write (c->wake_fd, &one, sizeof one) == -1)
    nbdkit_debug ("qmp: eventfd write: %m");
}

static void
send_to_client (void *opaque, const char *msg)
{
  queue (opaque, msg);
}

/* Write what the socket takes now.  False when the client is gone. */
static bool
flush_some (struct client *c)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->out_lock);
  ssize_t r;

  while (c->out_off < c->out_len) {
    r = send (c->fd, c->out + c->out_off, c->out_len - c->out_off,
              MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r == -1)
      return errno == EAGAIN || errno == EINTR;
    c->out_off += r;
  }
  c->out_off = c->out_len = 0;
  return !c->overflow;
}

static bool
has_output (struct client *c)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->out_lock);
  return c->out_off < c->out_len || c->overflow;
}

/* Read what is there and run it.  False when the client is gone. */
static bool
read_input (struct client *c)
{
  char buf[65536];
  ssize_t r = recv (c->fd, buf, sizeof buf, MSG_DONTWAIT);

  if (r == -1)
    return errno == EAGAIN || errno == EINTR;
  if (r == 0)
    return false;
  if (!qmp_session_input (&c->session, buf, r))
    return false;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&c->out_lock);
  c->negotiated = c->session.negotiated;
  return true;
}

static void *
client_thread (void *arg)
{
  struct client *c = arg;
  uint64_t n;

  qmp_session_greet (&c->session);
  for (;;) {
    struct pollfd fds[3] = {
      { .fd = c->fd, .events = POLLIN | (has_output (c) ? POLLOUT : 0) },
      { .fd = c->wake_fd, .events = POLLIN },
      { .fd = stop_fd, .events = POLLIN },
    };
    if (poll (fds, 3, -1) == -1 && errno != EINTR)
      break;
    if (fds[2].revents)
      break;
    if (fds[1].revents && read (c->wake_fd, &n, sizeof n) == -1)
      break;
    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) && !read_input (c))
      break;
    if (!flush_some (c))
      break;
  }
  /* Best effort to deliver the last replies (e.g. to quit). */
  flush_some (c);
  shutdown (c->fd, SHUT_RDWR);
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&clients_lock);
  c->done = true;
  return NULL;
}

static void
free_client (struct client *c)
{
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

static void
add_client (int fd)
{
  struct client *c = calloc (1, sizeof *c);
  int err;

  if (c == NULL || (c->wake_fd = eventfd (0, EFD_CLOEXEC)) == -1) {
    nbdkit_error ("qmp: new client: %m");
    free (c);
    close (fd);
    return;
  }
  c->fd = fd;
  pthread_mutex_init (&c->out_lock, NULL);
  qmp_session_init (&c->session, send_to_client, c);
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&clients_lock);
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
    unlink (socket_path);
  }
  if (stop_fd >= 0) {
    close (stop_fd);
    stop_fd = -1;
  }
  free (socket_path);
  socket_path = NULL;
}

bool
qmp_server_listening (void)
{
  return listen_fd >= 0;
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
      queue (c, text);
  }
}
