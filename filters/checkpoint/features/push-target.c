/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Push backup targets (see push-target.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <libnbd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "rounding.h"
#include "features/push-target.h"

/* Zeros written by hand (a file that cannot punch holes) go by pieces
 * of this size.
 */
#define ZERO_BUF (1024 * 1024)

struct push_target {
  char *name;
  int fd;                       /* a file, or -1 */
  struct nbd_handle *nbd;       /* an NBD export, or NULL */
  bool created;                 /* a file we created: reads as zeros */
};

bool
push_target_is_nbd (const char *target)
{
  return strncmp (target, "nbd://", 6) == 0 ||
    strncmp (target, "nbd+unix://", 11) == 0 ||
    strncmp (target, "nbds://", 7) == 0 ||
    strncmp (target, "nbds+unix://", 12) == 0;
}

static int
open_nbd (struct push_target *t, uint64_t size, struct qmp_error *err)
{
  int64_t tsize;

  t->nbd = nbd_create ();
  if (t->nbd == NULL ||
      nbd_connect_uri (t->nbd, t->name) == -1) {
    qmp_error (err, "Could not open '%s': %s", t->name, nbd_get_error ());
    return -1;
  }
  if (nbd_is_read_only (t->nbd) == 1) {
    qmp_error (err, "Could not open '%s': the export is read-only", t->name);
    return -1;
  }
  tsize = nbd_get_size (t->nbd);
  if (tsize < 0 || (uint64_t) tsize < size) {
    qmp_error (err, "Could not open '%s': the export has %" PRId64 " bytes, "
               "the disk %" PRIu64, t->name, tsize, size);
    return -1;
  }
  return 0;
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
  r = push_target_is_nbd (target) ? open_nbd (t, size, err)
                                   : open_file (t, existing, size, err);
  if (r == -1) {
    push_target_close (t, true);
    return NULL;
  }
  return t;
}

void
push_target_close (struct push_target *t, bool unlink_new)
{
  if (t == NULL)
    return;
  if (t->fd >= 0)
    close (t->fd);
  if (t->created && unlink_new)
    unlink (t->name);
  if (t->nbd) {
    if (nbd_aio_is_ready (t->nbd) == 1)
      nbd_shutdown (t->nbd, 0);
    nbd_close (t->nbd);
  }
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

int
push_target_write (struct push_target *t, const void *buf, size_t n,
                   uint64_t offset)
{
  const char *p = buf;

  if (t->nbd)
    return nbd_pwrite (t->nbd, buf, n, offset, 0) == -1 ? nbd_errno () : 0;
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
  return 0;
}

int
push_target_zero (struct push_target *t, uint64_t offset, uint64_t n)
{
  char *zeros;
  int r = 0;

  if (t->nbd)
    return nbd_zero (t->nbd, n, offset, 0) == -1 ? nbd_errno () : 0;
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

int
push_target_flush (struct push_target *t)
{
  if (t->nbd)
    return nbd_can_flush (t->nbd) != 1 || nbd_flush (t->nbd, 0) == 0
      ? 0 : nbd_errno ();
  if (fdatasync (t->fd) == -1 && errno != EINVAL)
    return -1;
  return 0;
}
