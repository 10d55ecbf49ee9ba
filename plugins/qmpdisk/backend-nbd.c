/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* nbdkit-qmpdisk-plugin: backend for disks on an NBD server (libnbd). */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <dirent.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <libnbd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "cleanup.h"
#include "qmp.h"
#include "rounding.h"
#include "backend.h"
#include "shutdown.h"

/* Requests are split to this size unless the server asks for less:
 * the NBD protocol promises nothing larger, and qemu-nbd refuses it.
 */
#define MAX_REQUEST (32 * 1024 * 1024)

struct nbd_backend {
  struct backend b;             /* must be first */
  char *uri;
  struct nbd_handle *nbd;
  int fd;                       /* nbd's socket, for disconnect; or -1 */
  pthread_mutex_t lock;         /* serialises all calls on nbd */
  bool fua, zero, fast_zero, meta;
  uint32_t max_request;
};

/* libnbd's message for the last failed call in this thread. */
static const char *
last_error (void)
{
  const char *msg = nbd_get_error ();

  return msg ? msg : "unknown error";
}

static int
remote_error (struct nbd_backend *n, const char *op)
{
  int err = nbd_get_errno ();

  nbdkit_error ("%s: %s: %s", n->uri, op, last_error ());
  nbdkit_set_error (err ? err : EIO);
  return -1;
}

static int
remote_pread (struct backend *b, void *buf, uint32_t count, uint64_t offset)
{
  struct nbd_backend *n = (struct nbd_backend *) b;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&n->lock);
  char *p = buf;

  while (count > 0) {
    uint32_t len = MIN (count, n->max_request);

    if (nbd_pread (n->nbd, p, len, offset, 0) == -1)
      return remote_error (n, "pread");
    p += len;
    count -= len;
    offset += len;
  }
  return 0;
}

/* Call with n->lock held. */
static int
flush_locked (struct nbd_backend *n)
{
  if (n->b.can_flush && nbd_flush (n->nbd, 0) == -1)
    return remote_error (n, "flush");
  return 0;
}

static int
remote_flush (struct backend *b)
{
  struct nbd_backend *n = (struct nbd_backend *) b;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&n->lock);

  return flush_locked (n);
}

/* FUA is passed on when the server has it, else done by a flush. */
static uint32_t
fua_flag (struct nbd_backend *n, uint32_t flags)
{
  return (flags & NBDKIT_FLAG_FUA) && n->fua ? LIBNBD_CMD_FLAG_FUA : 0;
}

static bool
needs_flush (struct nbd_backend *n, uint32_t flags)
{
  return (flags & NBDKIT_FLAG_FUA) && !n->fua;
}

static int
remote_pwrite (struct backend *b, const void *buf, uint32_t count,
               uint64_t offset, uint32_t flags)
{
  struct nbd_backend *n = (struct nbd_backend *) b;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&n->lock);
  const char *p = buf;

  while (count > 0) {
    uint32_t len = MIN (count, n->max_request);

    if (nbd_pwrite (n->nbd, p, len, offset, fua_flag (n, flags)) == -1)
      return remote_error (n, "pwrite");
    p += len;
    count -= len;
    offset += len;
  }
  return needs_flush (n, flags) ? flush_locked (n) : 0;
}

static int
remote_zero (struct backend *b, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  struct nbd_backend *n = (struct nbd_backend *) b;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&n->lock);
  bool fast = flags & NBDKIT_FLAG_FAST_ZERO;
  uint32_t f = fua_flag (n, flags);

  /* nbdkit writes the zeroes (or fails the fast zero). */
  if (!n->zero || (fast && !n->fast_zero)) {
    nbdkit_set_error (ENOTSUP);
    return -1;
  }
  if (!(flags & NBDKIT_FLAG_MAY_TRIM))
    f |= LIBNBD_CMD_FLAG_NO_HOLE;
  if (fast)
    f |= LIBNBD_CMD_FLAG_FAST_ZERO;
  if (nbd_zero (n->nbd, count, offset, f) == -1) {
    int err = nbd_get_errno ();

    /* A refused fast zero is an answer, not a failure. */
    if (fast && (err == ENOTSUP || err == EOPNOTSUPP)) {
      nbdkit_set_error (ENOTSUP);
      return -1;
    }
    return remote_error (n, "zero");
  }
  return needs_flush (n, flags) ? flush_locked (n) : 0;
}

static int
remote_trim (struct backend *b, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  struct nbd_backend *n = (struct nbd_backend *) b;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&n->lock);

  if (!n->b.can_trim)           /* only advice: ignoring it is fine */
    return 0;
  if (nbd_trim (n->nbd, count, offset, fua_flag (n, flags)) == -1)
    return remote_error (n, "trim");
  return needs_flush (n, flags) ? flush_locked (n) : 0;
}

struct extents_data {
  struct nbdkit_extents *extents;
  size_t added;
};

static int
extent_cb (void *opaque, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t nr_entries, int *error)
{
  struct extents_data *data = opaque;
  size_t i;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  for (i = 0; i + 1 < nr_entries; i += 2) {
    uint32_t type = entries[i + 1] & (NBDKIT_EXTENT_HOLE |
                                      NBDKIT_EXTENT_ZERO);

    if (nbdkit_add_extent (data->extents, offset, entries[i], type) == -1) {
      *error = errno ? errno : EIO;
      return -1;
    }
    offset += entries[i];
    data->added++;
  }
  return 0;
}

static int
remote_extents (struct backend *b, uint32_t count, uint64_t offset,
                uint32_t flags, struct nbdkit_extents *extents)
{
  struct nbd_backend *n = (struct nbd_backend *) b;
  struct extents_data data = { .extents = extents };
  uint32_t f = flags & NBDKIT_FLAG_REQ_ONE ? LIBNBD_CMD_FLAG_REQ_ONE : 0;

  if (n->meta) {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&n->lock);

    if (nbd_block_status (n->nbd, count, offset,
                          (nbd_extent_callback) { .callback = extent_cb,
                                                  .user_data = &data },
                          f) == -1)
      return remote_error (n, "block_status");
  }
  /* Without base:allocation everything is data. */
  if (data.added == 0)
    return nbdkit_add_extent (extents, offset, count, 0);
  return 0;
}

static int
remote_cache (struct backend *b, uint32_t count, uint64_t offset)
{
  struct nbd_backend *n = (struct nbd_backend *) b;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&n->lock);

  if (n->b.can_cache && nbd_cache (n->nbd, count, offset, 0) == -1)
    return remote_error (n, "cache");
  return 0;
}

static int
remote_open_rw (struct backend *b, struct qmp_error *err)
{
  return 0;                     /* checked when connecting */
}

static int
remote_resize (struct backend *b, uint64_t size, struct qmp_error *err)
{
  qmp_error (err, "Cannot resize NBD nodes");
  return -1;
}

/* shutdown(2) leaves the descriptor to libnbd: any call blocked on
 * it returns, the server sees the end of the connection, and nbd_close
 * frees it all later.
 */
static void
remote_disconnect (struct backend *b)
{
  struct nbd_backend *n = (struct nbd_backend *) b;

  if (n->fd >= 0 && shutdown (n->fd, SHUT_RDWR) == -1 && errno != ENOTCONN)
    nbdkit_debug ("%s: shutdown: %m", n->uri);
}

static void
remote_close (struct backend *b)
{
  struct nbd_backend *n = (struct nbd_backend *) b;

  if (n->nbd) {
    nbd_shutdown (n->nbd, 0);   /* polite; failure does not matter */
    nbd_close (n->nbd);
  }
  pthread_mutex_destroy (&n->lock);
  free (n->uri);
  free (n);
}

static const struct backend_ops remote_ops = {
  .pread = remote_pread,
  .pwrite = remote_pwrite,
  .zero = remote_zero,
  .trim = remote_trim,
  .flush = remote_flush,
  .extents = remote_extents,
  .cache = remote_cache,
  .open_rw = remote_open_rw,
  .resize = remote_resize,
  .disconnect = remote_disconnect,
  .close = remote_close,
};

static bool
is_power_of_2 (int64_t v)
{
  return v > 0 && (v & (v - 1)) == 0;
}

/* Passes the server's block size constraints on if nbdkit will accept
 * them, and splits requests to fit its maximum.
 */
static void
get_block_sizes (struct nbd_backend *n)
{
  int64_t min = nbd_get_block_size (n->nbd, LIBNBD_SIZE_MINIMUM);
  int64_t pref = nbd_get_block_size (n->nbd, LIBNBD_SIZE_PREFERRED);
  int64_t max = nbd_get_block_size (n->nbd, LIBNBD_SIZE_MAXIMUM);

  n->max_request = MAX_REQUEST;
  if (max > 0 && max < MAX_REQUEST)
    n->max_request = max;

  if (is_power_of_2 (min) && min <= 65536 &&
      is_power_of_2 (pref) && pref >= 512 && pref <= MAX_REQUEST &&
      max >= pref && max <= UINT32_MAX && max % min == 0) {
    n->b.block_min = min;
    n->b.block_pref = pref;
    n->b.block_max = max;
  }
}

/* Reads what the server can do.  Call once, after connecting. */
static int
get_capabilities (struct nbd_backend *n, bool readonly, struct qmp_error *err)
{
  int64_t size = nbd_get_size (n->nbd);

  if (size == -1) {
    qmp_error (err, "Could not open '%s': %s", n->uri, last_error ());
    return -1;
  }
  if (!readonly && nbd_is_read_only (n->nbd) == 1) {
    qmp_error (err, "Could not open '%s': NBD export is read-only",
               n->uri);
    return -1;
  }
  n->b.size = size;
  n->b.driver = "nbd";
  n->b.can_flush = nbd_can_flush (n->nbd) == 1;
  n->b.can_trim = nbd_can_trim (n->nbd) == 1;
  n->b.can_cache = nbd_can_cache (n->nbd) == 1;
  n->fua = nbd_can_fua (n->nbd) == 1;
  n->b.can_fua = n->fua || n->b.can_flush;
  n->zero = nbd_can_zero (n->nbd) == 1;
  n->fast_zero = nbd_can_fast_zero (n->nbd) == 1;
  n->meta = nbd_can_meta_context (n->nbd,
                                  LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  get_block_sizes (n);
  return 0;
}

/* Longest wait for a server to connect and finish the handshake. */
static unsigned connect_timeout = NBD_CONNECT_TIMEOUT_DEFAULT;

void
nbd_backend_set_timeout (unsigned seconds)
{
  connect_timeout = seconds;
}

static int64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* nbd_connect_uri, but giving up after connect_timeout or when nbdkit
 * starts shutting down: libnbd 1.14 would wait for ever on a server
 * that accepts and never speaks.  (A host name is still resolved
 * before the clock starts: libnbd calls getaddrinfo synchronously.)
 */
static int
connect_bounded (struct nbd_backend *n, struct qmp_error *err)
{
  int64_t deadline = now_ms () + (int64_t) connect_timeout * 1000;
  int stop_fd = shutdown_fd ();

  if (nbd_aio_connect_uri (n->nbd, n->uri) == -1)
    goto libnbd_error;
  while (nbd_aio_is_connecting (n->nbd) == 1 ||
         nbd_aio_is_created (n->nbd) == 1) {
    unsigned dir = nbd_aio_get_direction (n->nbd);
    struct pollfd fds[2] = {
      { .fd = nbd_aio_get_fd (n->nbd) },
      { .fd = stop_fd, .events = POLLIN },
    };
    int64_t left = deadline - now_ms ();
    int r;

    if (left <= 0) {
      qmp_error (err, "Could not open '%s': the NBD server did not "
                 "complete the handshake within %u s (connect-timeout)",
                 n->uri, connect_timeout);
      return -1;
    }
    if (fds[0].fd == -1)
      goto libnbd_error;
    if (dir & LIBNBD_AIO_DIRECTION_READ)
      fds[0].events |= POLLIN;
    if (dir & LIBNBD_AIO_DIRECTION_WRITE)
      fds[0].events |= POLLOUT;
    r = poll (fds, 2, left > 1000 ? 1000 : (int) left);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1) {
      qmp_error (err, "Could not open '%s': poll: %s",
                 n->uri, strerror (errno));
      return -1;
    }
    if (fds[1].revents & POLLIN) {
      qmp_error (err, "Could not open '%s': nbdkit is shutting down",
                 n->uri);
      return -1;
    }
    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) &&
        (dir & LIBNBD_AIO_DIRECTION_READ)) {
      if (nbd_aio_notify_read (n->nbd) == -1)
        goto libnbd_error;
    }
    else if (fds[0].revents & (POLLOUT | POLLHUP | POLLERR)) {
      if (nbd_aio_notify_write (n->nbd) == -1)
        goto libnbd_error;
    }
  }
  if (nbd_aio_is_ready (n->nbd) == 1)
    return 0;

 libnbd_error:
  qmp_error (err, "Could not open '%s': %s", n->uri, last_error ());
  return -1;
}

/* Our pid before nbdkit forks into the background: a Unix socket
 * reports the pid of the process that called listen, and nbdkit
 * listens before it forks.
 */
static pid_t startup_pid;

void
nbd_backend_init (void)
{
  startup_pid = getpid ();
}

static bool
same_inet_address (const struct sockaddr_storage *a,
                   const struct sockaddr_storage *b)
{
  if (a->ss_family != b->ss_family)
    return false;
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *x = (const void *) a, *y = (const void *) b;
    return x->sin_port == y->sin_port &&
      x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  if (a->ss_family == AF_INET6) {
    const struct sockaddr_in6 *x = (const void *) a, *y = (const void *) b;
    return x->sin6_port == y->sin6_port &&
      memcmp (&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
  }
  return false;
}

/* Is there a socket in this process whose two ends are FD's swapped,
 * i.e. the one our own server accepted for FD?
 */
static bool
other_end_is_ours (int fd, const struct sockaddr_storage *local,
                   const struct sockaddr_storage *peer)
{
  DIR *dir = opendir ("/proc/self/fd");
  struct dirent *e;
  bool found = false;

  if (dir == NULL) {
    nbdkit_debug ("qmpdisk: /proc/self/fd: %m: cannot check for a loop");
    return false;
  }
  while (!found && (e = readdir (dir)) != NULL) {
    struct sockaddr_storage l, p;
    socklen_t ll = sizeof l, pl = sizeof p;
    int other = atoi (e->d_name);

    if (e->d_name[0] < '0' || e->d_name[0] > '9' || other == fd)
      continue;
    if (getsockname (other, (struct sockaddr *) &l, &ll) == 0 &&
        getpeername (other, (struct sockaddr *) &p, &pl) == 0 &&
        same_inet_address (&l, peer) && same_inet_address (&p, local))
      found = true;
  }
  closedir (dir);
  return found;
}

/* Does the connection on FD lead back to this nbdkit?  Unix sockets:
 * the listening process's pid (SO_PEERCRED).  TCP: our own server has
 * the other end (after the handshake it has accepted it).  A loop
 * through another server or proxy cannot be seen from here.
 */
static bool
is_loopback (int fd)
{
  struct sockaddr_storage local, peer;
  socklen_t ll = sizeof local, pl = sizeof peer;

  if (getsockname (fd, (struct sockaddr *) &local, &ll) == -1 ||
      getpeername (fd, (struct sockaddr *) &peer, &pl) == -1)
    return false;
  if (local.ss_family == AF_UNIX) {
    struct ucred cred;
    socklen_t cl = sizeof cred;

    if (getsockopt (fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == -1)
      return false;
    return cred.pid == getpid () || cred.pid == startup_pid;
  }
  if (local.ss_family == AF_INET || local.ss_family == AF_INET6)
    return other_end_is_ours (fd, &local, &peer);
  return false;
}

struct backend *
nbd_backend_open (const char *uri, bool readonly, struct qmp_error *err)
{
  struct nbd_backend *n;

  n = calloc (1, sizeof *n);
  if (n == NULL || (n->uri = strdup (uri)) == NULL) {
    qmp_error (err, "%s", strerror (errno));
    free (n);
    return NULL;
  }
  n->b.ops = &remote_ops;
  n->fd = -1;
  pthread_mutex_init (&n->lock, NULL);

  n->nbd = nbd_create ();
  if (n->nbd == NULL ||
      nbd_add_meta_context (n->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1) {
    qmp_error (err, "Could not open '%s': %s", uri, last_error ());
    remote_close (&n->b);
    return NULL;
  }
  if (connect_bounded (n, err) == -1) {
    remote_close (&n->b);
    return NULL;
  }
  n->fd = nbd_aio_get_fd (n->nbd);
  if (n->fd >= 0 && is_loopback (n->fd)) {
    qmp_error (err, "Could not open '%s': it is this nbdkit's own "
               "NBD server; a node cannot be served from itself", uri);
    remote_close (&n->b);
    return NULL;
  }
  if (get_capabilities (n, readonly, err) == -1) {
    remote_close (&n->b);
    return NULL;
  }
  return &n->b;
}
