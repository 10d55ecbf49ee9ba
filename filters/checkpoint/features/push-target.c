/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Push backup targets (see push-target.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <libnbd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "cleanup.h"
#include "rounding.h"
#include "features/push-target.h"

/* Zeros written by hand (a file that cannot punch holes) go by pieces
 * of this size.
 */
#define ZERO_BUF (1024 * 1024)

/* Connections to an NBD target: one per copy worker when the server
 * allows multi-conn (a synchronous libnbd call holds its handle until
 * the reply, so one connection has one request in flight).
 */
#define MAX_CONNECTIONS 4

/* A file target's writes start their writeback at once, and the
 * pages of the write WRITE_BEHIND writes back are waited for and
 * dropped from the page cache.  The disk then writes while the copy
 * runs, rather than all of it in the flush at the end, and a backup
 * does not fill the page cache with data no one reads soon.
 */
#define WRITE_BEHIND 16

struct written { uint64_t offset, n; };

/* An NBD target that can flush and allows multi-conn gets one more
 * connection, whose thread flushes every FLUSH_BEHIND bytes written:
 * its server's writeback then runs alongside the copy, as a file's
 * does, and no copy worker waits for it.  (Flushing from the worker
 * whose write crossed the mark made pushes slower.)
 */
#define FLUSH_BEHIND (256 * 1024 * 1024)

struct push_target {
  char *name;
  int fd;                       /* a file, or -1 */
  bool created;                 /* a file we created: reads as zeros */
  /* Atomic: a file whose writes are written behind (false once
   * sync_file_range turns out missing).  Under lock: the last writes
   * to the file (a ring), while writeback works on them.
   */
  bool write_behind;
  struct written behind[WRITE_BEHIND];
  unsigned behind_next;
  /* An NBD export: NR handles, of which those not BUSY are free to
   * take (lock, cond).
   */
  struct nbd_handle *nbd[MAX_CONNECTIONS];
  bool busy[MAX_CONNECTIONS];
  unsigned nr;
  bool can_flush;
  /* The flush-behind connection and its thread, or NULL.  Under lock:
   * bytes written since its last flush, quit, and the first error of
   * its flushes (reported by push_target_flush).
   */
  struct nbd_handle *flusher;
  pthread_t flush_thread;
  uint64_t unflushed;
  bool flush_quit;
  int flush_errno;
  pthread_cond_t flush_due;
  pthread_mutex_t lock;
  pthread_cond_t freed;
};

bool
push_target_is_nbd (const char *target)
{
  return strncmp (target, "nbd://", 6) == 0 ||
    strncmp (target, "nbd+unix://", 11) == 0 ||
    strncmp (target, "nbds://", 7) == 0 ||
    strncmp (target, "nbds+unix://", 12) == 0;
}

static void *
flush_behind (void *opaque)
{
  struct push_target *t = opaque;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&t->lock);

  for (;;) {
    int r, e;

    while (!t->flush_quit && t->unflushed < FLUSH_BEHIND)
      pthread_cond_wait (&t->flush_due, &t->lock);
    if (t->flush_quit)
      return NULL;
    t->unflushed = 0;
    pthread_mutex_unlock (&t->lock);
    r = nbd_flush (t->flusher, 0);
    e = r == -1 ? nbd_get_errno () : 0;
    if (r == -1)
      nbdkit_debug ("checkpoint: push target %s: flush: %s", t->name,
                    nbd_get_error ());
    pthread_mutex_lock (&t->lock);
    if (r == -1 && t->flush_errno == 0)
      t->flush_errno = e ? e : EIO;
  }
}

/* Only where a flush covers every connection's writes (multi-conn);
 * without it the flush at the end does all of the writeback.
 */
static void
start_flush_behind (struct push_target *t)
{
  struct nbd_handle *h = nbd_create ();

  if (h == NULL || nbd_connect_uri (h, t->name) == -1) {
    nbdkit_debug ("checkpoint: push target %s: no flush-behind "
                  "connection: %s", t->name, nbd_get_error ());
    nbd_close (h);
    return;
  }
  t->flusher = h;
  if (pthread_create (&t->flush_thread, NULL, flush_behind, t) != 0) {
    nbdkit_debug ("checkpoint: push target %s: no flush-behind thread",
                  t->name);
    nbd_close (h);
    t->flusher = NULL;
  }
}

static void
stop_flush_behind (struct push_target *t)
{
  if (t->flusher == NULL)
    return;
  pthread_mutex_lock (&t->lock);
  t->flush_quit = true;
  pthread_cond_signal (&t->flush_due);
  pthread_mutex_unlock (&t->lock);
  pthread_join (t->flush_thread, NULL);
  if (nbd_aio_is_ready (t->flusher) == 1)
    nbd_shutdown (t->flusher, 0);
  nbd_close (t->flusher);
  t->flusher = NULL;
}

/* N bytes were written to an NBD target. */
static void
count_unflushed (struct push_target *t, uint64_t n)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&t->lock);

  t->unflushed += n;
  if (t->unflushed >= FLUSH_BEHIND)
    pthread_cond_signal (&t->flush_due);
}

static int
open_nbd (struct push_target *t, uint64_t size, struct qmp_error *err)
{
  struct nbd_handle *h;
  int64_t tsize;

  h = t->nbd[t->nr++] = nbd_create ();
  if (h == NULL || nbd_connect_uri (h, t->name) == -1) {
    qmp_error (err, "Could not open '%s': %s", t->name, nbd_get_error ());
    return -1;
  }
  if (nbd_is_read_only (h) == 1) {
    qmp_error (err, "Could not open '%s': the export is read-only", t->name);
    return -1;
  }
  tsize = nbd_get_size (h);
  if (tsize < 0 || (uint64_t) tsize < size) {
    qmp_error (err, "Could not open '%s': the export has %" PRId64 " bytes, "
               "the disk %" PRIu64, t->name, tsize, size);
    return -1;
  }
  t->can_flush = nbd_can_flush (h) == 1;
  /* More connections only where the server says they see one another
   * (a server without multi-conn may even serve one client at a time).
   */
  while (nbd_can_multi_conn (t->nbd[0]) == 1 && t->nr < MAX_CONNECTIONS) {
    h = nbd_create ();
    if (h == NULL || nbd_connect_uri (h, t->name) == -1) {
      nbdkit_debug ("checkpoint: push target %s: connection %u: %s: going "
                    "on with %u", t->name, t->nr + 1, nbd_get_error (),
                    t->nr);
      nbd_close (h);
      break;
    }
    t->nbd[t->nr++] = h;
  }
  if (t->can_flush && nbd_can_multi_conn (t->nbd[0]) == 1)
    start_flush_behind (t);
  return 0;
}

/* A free connection of T, held until put_handle. */
static unsigned
take_handle (struct push_target *t)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&t->lock);
  unsigned i;

  for (;;) {
    for (i = 0; i < t->nr; i++)
      if (!t->busy[i]) {
        t->busy[i] = true;
        return i;
      }
    pthread_cond_wait (&t->freed, &t->lock);
  }
}

static void
put_handle (struct push_target *t, unsigned i)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&t->lock);

  t->busy[i] = false;
  pthread_cond_signal (&t->freed);
}

static int
open_file (struct push_target *t, bool existing, uint64_t size,
           struct qmp_error *err)
{
  struct stat st;

  if (existing) {
    t->fd = open (t->name, O_WRONLY | O_CLOEXEC);
    if (t->fd == -1) {
      qmp_error (err, "Could not open '%s': %s", t->name, strerror (errno));
      return -1;
    }
    if (fstat (t->fd, &st) == 0 && S_ISREG (st.st_mode) &&
        (uint64_t) st.st_size < size && ftruncate (t->fd, size) == -1) {
      qmp_error (err, "Could not resize '%s': %s", t->name, strerror (errno));
      return -1;
    }
    return 0;
  }
  t->fd = open (t->name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (t->fd == -1) {
    qmp_error (err, "Could not create '%s': %s", t->name, strerror (errno));
    return -1;
  }
  /* A device keeps its old contents. */
  if (fstat (t->fd, &st) == 0 && !S_ISREG (st.st_mode))
    return 0;
  t->created = true;
  if (ftruncate (t->fd, size) == -1) {
    qmp_error (err, "Could not create '%s': %s", t->name, strerror (errno));
    return -1;
  }
  return 0;
}

struct push_target *
push_target_open (const char *target, bool existing, uint64_t size,
                  struct qmp_error *err)
{
  struct push_target *t = calloc (1, sizeof *t);
  int r;

  if (t == NULL || (t->name = strdup (target)) == NULL) {
    free (t);
    qmp_error (err, "out of memory");
    return NULL;
  }
  t->fd = -1;
  pthread_mutex_init (&t->lock, NULL);
  pthread_cond_init (&t->freed, NULL);
  pthread_cond_init (&t->flush_due, NULL);
  r = push_target_is_nbd (target) ? open_nbd (t, size, err)
                                   : open_file (t, existing, size, err);
  if (r == -1) {
    push_target_close (t, true);
    return NULL;
  }
  t->write_behind = t->fd >= 0;
  return t;
}

void
push_target_close (struct push_target *t, bool unlink_new)
{
  unsigned i;

  if (t == NULL)
    return;
  stop_flush_behind (t);
  if (t->fd >= 0)
    close (t->fd);
  if (t->created && unlink_new)
    unlink (t->name);
  for (i = 0; i < t->nr; i++) {
    if (t->nbd[i] && nbd_aio_is_ready (t->nbd[i]) == 1)
      nbd_shutdown (t->nbd[i], 0);
    nbd_close (t->nbd[i]);
  }
  pthread_mutex_destroy (&t->lock);
  pthread_cond_destroy (&t->freed);
  pthread_cond_destroy (&t->flush_due);
  free (t->name);
  free (t);
}

bool
push_target_reads_zeros (const struct push_target *t)
{
  return t->created;
}

static int
nbd_errno (void)
{
  int e = nbd_get_errno ();

  nbdkit_debug ("checkpoint: NBD target: %s", nbd_get_error ());
  errno = e ? e : EIO;
  return -1;
}

/* Where sync_file_range cannot work (not Linux's file systems, say),
 * the flush at the end does all of the writeback.
 */
static bool
write_behind_unsupported (int e)
{
  return e == ENOSYS || e == EINVAL || e == ESPIPE || e == EOPNOTSUPP;
}

/* [OFFSET, OFFSET+N) of the file was written: start its writeback,
 * and finish the one of the write WRITE_BEHIND before it.  -1 with
 * errno for an I/O error of the writeback.
 */
static int
file_written (struct push_target *t, uint64_t offset, uint64_t n)
{
  struct written old = { 0, 0 };

  if (!__atomic_load_n (&t->write_behind, __ATOMIC_RELAXED))
    return 0;
  if (sync_file_range (t->fd, offset, n, SYNC_FILE_RANGE_WRITE) == -1)
    goto failed;
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&t->lock);
    old = t->behind[t->behind_next];
    t->behind[t->behind_next] = (struct written) { offset, n };
    t->behind_next = (t->behind_next + 1) % WRITE_BEHIND;
  }
  if (old.n == 0)
    return 0;
  if (sync_file_range (t->fd, old.offset, old.n,
                       SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                       SYNC_FILE_RANGE_WAIT_AFTER) == -1)
    goto failed;
  /* Only advice: the data is on its way to the disk either way. */
  posix_fadvise (t->fd, old.offset, old.n, POSIX_FADV_DONTNEED);
  return 0;

 failed:
  if (!write_behind_unsupported (errno))
    return -1;
  nbdkit_debug ("checkpoint: push target %s: no write-behind: %m", t->name);
  __atomic_store_n (&t->write_behind, false, __ATOMIC_RELAXED);
  return 0;
}

int
push_target_write (struct push_target *t, const void *buf, size_t n,
                   uint64_t offset)
{
  uint64_t start = offset, len = n;
  const char *p = buf;

  if (t->nr) {
    unsigned i = take_handle (t);
    int r = nbd_pwrite (t->nbd[i], buf, n, offset, 0) == -1 ? nbd_errno () : 0;
    put_handle (t, i);
    if (r == 0 && t->flusher)
      count_unflushed (t, n);
    return r;
  }
  while (n > 0) {
    ssize_t r = pwrite (t->fd, p, n, offset);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (r == 0) {
      errno = ENOSPC;
      return -1;
    }
    p += r;
    n -= r;
    offset += r;
  }
  return file_written (t, start, len);
}

int
push_target_zero (struct push_target *t, uint64_t offset, uint64_t n)
{
  char *zeros;
  int r = 0;

  if (t->nr) {
    unsigned i = take_handle (t);
    r = nbd_zero (t->nbd[i], n, offset, 0) == -1 ? nbd_errno () : 0;
    put_handle (t, i);
    return r;
  }
  if (fallocate (t->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 offset, n) == 0 ||
      fallocate (t->fd, FALLOC_FL_ZERO_RANGE, offset, n) == 0)
    return 0;
  if ((zeros = calloc (1, ZERO_BUF)) == NULL)
    return -1;
  while (r == 0 && n > 0) {
    size_t len = MIN (n, ZERO_BUF);
    r = push_target_write (t, zeros, len, offset);
    offset += len;
    n -= len;
  }
  free (zeros);
  return r;
}

/* With several connections, each one is flushed: multi-conn promises
 * that a flush covers the writes of every connection, but flushing all
 * does not depend on it.
 */
int
push_target_flush (struct push_target *t)
{
  unsigned i;
  int e;

  for (i = 0; i < t->nr; i++)
    if (t->can_flush && nbd_flush (t->nbd[i], 0) == -1)
      return nbd_errno ();
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&t->lock);
    e = t->flush_errno;
  }
  if (e) {
    errno = e;
    return -1;
  }
  if (t->nr)
    return 0;
  if (fdatasync (t->fd) == -1 && errno != EINVAL)
    return -1;
  return 0;
}
