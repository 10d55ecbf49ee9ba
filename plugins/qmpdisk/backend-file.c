/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* nbdkit-qmpdisk-plugin: backend for regular files and block devices. */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <inttypes.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <linux/fs.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "cleanup.h"
#include "qmp.h"
#include "backend.h"

struct fd_backend {
  struct backend b;             /* must be first */
  char *path;
  bool is_block;
  int rdfd;                     /* always open; O_RDWR if rwfd == rdfd */
  int rwfd;                     /* -1 until writable; read atomically */
  pthread_mutex_t rw_lock;      /* serialises opening rwfd */

  /* Set (atomically) when a zeroing method turns out unsupported, so
   * that it is not tried again on every request.
   */
  bool no_zero_range, no_punch_hole, no_zeroout, no_discard;
};

static int
fd_error (struct fd_backend *f, const char *op, int err)
{
  nbdkit_error ("%s: %s: %s", f->path, op, strerror (err));
  nbdkit_set_error (err);
  return -1;
}

/* The descriptor for writing, or -1 with EROFS if the disk was never
 * opened for writing (nbdkit does not send writes then).
 */
static int
write_fd (struct fd_backend *f)
{
  int fd = __atomic_load_n (&f->rwfd, __ATOMIC_ACQUIRE);

  if (fd == -1)
    fd_error (f, "write", EROFS);
  return fd;
}

static int
fd_pread (struct backend *b, void *buf, uint32_t count, uint64_t offset)
{
  struct fd_backend *f = (struct fd_backend *) b;
  char *p = buf;

  while (count > 0) {
    ssize_t r = pread (f->rdfd, p, count, offset);

    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1)
      return fd_error (f, "pread", errno);
    if (r == 0) {
      nbdkit_error ("%s: pread: unexpected end of file at offset %" PRIu64,
                    f->path, offset);
      nbdkit_set_error (EIO);
      return -1;
    }
    p += r;
    count -= r;
    offset += r;
  }
  return 0;
}

static int
fd_sync (struct fd_backend *f)
{
  int fd = __atomic_load_n (&f->rwfd, __ATOMIC_ACQUIRE);

  if (fd == -1)
    fd = f->rdfd;

  while (fdatasync (fd) == -1) {
    if (errno != EINTR)
      return fd_error (f, "fdatasync", errno);
  }
  return 0;
}

static int
fd_flush (struct backend *b)
{
  return fd_sync ((struct fd_backend *) b);
}

static int
fd_pwrite (struct backend *b, const void *buf, uint32_t count,
           uint64_t offset, uint32_t flags)
{
  struct fd_backend *f = (struct fd_backend *) b;
  const char *p = buf;
  int fd = write_fd (f);

  if (fd == -1)
    return -1;
  while (count > 0) {
    ssize_t r = pwrite (fd, p, count, offset);

    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1)
      return fd_error (f, "pwrite", errno);
    if (r == 0)
      return fd_error (f, "pwrite", EIO);
    p += r;
    count -= r;
    offset += r;
  }

  if (flags & NBDKIT_FLAG_FUA)
    return fd_sync (f);
  return 0;
}

static bool
is_unsupported (int err)
{
  /* ENODEV: fallocate on a block device with old kernels. */
  return err == EOPNOTSUPP || err == ENOTSUP || err == ENODEV;
}

/* Returns 0 on success, 1 if unsupported (remembered in *no), -1 with
 * errno on error.
 */
static int
try_fallocate (int fd, bool *no, int mode, uint32_t count, uint64_t offset)
{
  int r;

  if (__atomic_load_n (no, __ATOMIC_RELAXED))
    return 1;
  do
    r = fallocate (fd, mode, offset, count);
  while (r == -1 && errno == EINTR);
  if (r == -1 && is_unsupported (errno)) {
    __atomic_store_n (no, true, __ATOMIC_RELAXED);
    return 1;
  }
  return r;
}

/* Same convention, for BLKZEROOUT and BLKDISCARD on block devices. */
static int
try_ioctl (int fd, bool *no, unsigned long request,
           uint32_t count, uint64_t offset)
{
  uint64_t range[2] = { offset, count };
  int r;

  if (__atomic_load_n (no, __ATOMIC_RELAXED))
    return 1;
  do
    r = ioctl (fd, request, range);
  while (r == -1 && errno == EINTR);
  if (r == -1 && (is_unsupported (errno) || errno == ENOTTY)) {
    __atomic_store_n (no, true, __ATOMIC_RELAXED);
    return 1;
  }
  return r;
}

static int
fd_zero (struct backend *b, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct fd_backend *f = (struct fd_backend *) b;
  bool fast = flags & NBDKIT_FLAG_FAST_ZERO;
  int fd = write_fd (f);
  int r = 1;

  if (fd == -1)
    return -1;

  /* Punching (when allowed) frees the space as well.  On a block
   * device the kernel may write the zeroes itself for ZERO_RANGE and
   * BLKZEROOUT, which a fast zero must not wait for; it never does for
   * PUNCH_HOLE.
   */
  if (flags & NBDKIT_FLAG_MAY_TRIM)
    r = try_fallocate (fd, &f->no_punch_hole,
                       FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                       count, offset);
  if (r == 1 && !(f->is_block && fast))
    r = try_fallocate (fd, &f->no_zero_range,
                       FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                       count, offset);
  if (r == 1 && f->is_block && !fast)
    r = try_ioctl (fd, &f->no_zeroout, BLKZEROOUT, count, offset);

  if (r == 1) {
    /* nbdkit writes the zeroes (or fails the fast zero). */
    nbdkit_set_error (ENOTSUP);
    return -1;
  }
  if (r == -1)
    return fd_error (f, "zero", errno);
  if (flags & NBDKIT_FLAG_FUA)
    return fd_sync (f);
  return 0;
}

static int
fd_trim (struct backend *b, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct fd_backend *f = (struct fd_backend *) b;
  int fd = write_fd (f);
  int r;

  if (fd == -1)
    return -1;
  if (f->is_block)
    r = try_ioctl (fd, &f->no_discard, BLKDISCARD, count, offset);
  else
    r = try_fallocate (fd, &f->no_punch_hole,
                       FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                       count, offset);
  /* r == 1: trim is only advice, doing nothing is correct. */
  if (r == -1)
    return fd_error (f, "trim", errno);
  if (flags & NBDKIT_FLAG_FUA)
    return fd_sync (f);
  return 0;
}

/* lseek, taking "none before the end of the file" (ENXIO) as end. */
static int
seek_to (struct fd_backend *f, uint64_t offset, int whence, uint64_t end,
         uint64_t *pos)
{
  off_t r = lseek (f->rdfd, offset, whence);

  if (r == -1 && errno != ENXIO)
    return fd_error (f, whence == SEEK_DATA ? "lseek: SEEK_DATA"
                     : "lseek: SEEK_HOLE", errno);
  *pos = r == -1 ? end : (uint64_t) r;
  return 0;
}

static int
fd_extents (struct backend *b, uint32_t count, uint64_t offset,
            uint32_t flags, struct nbdkit_extents *extents)
{
  struct fd_backend *f = (struct fd_backend *) b;
  const uint64_t end = offset + count;
  uint64_t pos;
  uint32_t type;

  /* No reliable allocation information for block devices. */
  if (f->is_block)
    return nbdkit_add_extent (extents, offset, count, 0);

  while (offset < end) {
    if (seek_to (f, offset, SEEK_DATA, end, &pos) == -1)
      return -1;
    if (pos > offset)
      type = NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;
    else {
      if (seek_to (f, offset, SEEK_HOLE, end, &pos) == -1)
        return -1;
      if (pos <= offset)        /* the file shrank meanwhile */
        pos = end;
      type = 0;
    }
    if (nbdkit_add_extent (extents, offset, pos - offset, type) == -1)
      return -1;
    offset = pos;
    if (flags & NBDKIT_FLAG_REQ_ONE)
      break;
  }
  return 0;
}

static int
fd_cache (struct backend *b, uint32_t count, uint64_t offset)
{
  struct fd_backend *f = (struct fd_backend *) b;
  int r = posix_fadvise (f->rdfd, offset, count, POSIX_FADV_WILLNEED);

  if (r != 0)
    return fd_error (f, "posix_fadvise", r);
  return 0;
}

/* O_NONBLOCK so that opening a FIFO cannot hang; then cleared, as it
 * means nothing for the files and block devices that we accept.
 */
static int
open_path (const char *path, int mode)
{
  int fd = open (path, mode | O_NONBLOCK | O_CLOEXEC);
  int fl;

  if (fd >= 0 && ((fl = fcntl (fd, F_GETFL)) == -1 ||
                  fcntl (fd, F_SETFL, fl & ~O_NONBLOCK) == -1)) {
    int err = errno;

    close (fd);
    errno = err;
    return -1;
  }
  return fd;
}

static bool
same_file (int fd1, int fd2)
{
  struct stat st1, st2;

  return fstat (fd1, &st1) == 0 && fstat (fd2, &st2) == 0 &&
    st1.st_dev == st2.st_dev && st1.st_ino == st2.st_ino;
}

static int
fd_open_rw (struct backend *b, struct qmp_error *err)
{
  struct fd_backend *f = (struct fd_backend *) b;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&f->rw_lock);
  int fd;

  if (f->rwfd >= 0)
    return 0;
  fd = open_path (f->path, O_RDWR);
  if (fd == -1) {
    int saved_errno = errno;

    qmp_error (err, "Could not open '%s' for writing: %s",
               f->path, strerror (saved_errno));
    errno = saved_errno;
    return -1;
  }
  /* The path may name another file by now. */
  if (!same_file (fd, f->rdfd)) {
    qmp_error (err, "Could not open '%s' for writing: "
               "it was replaced since the disk was added", f->path);
    close (fd);
    errno = ESTALE;
    return -1;
  }
  __atomic_store_n (&f->rwfd, fd, __ATOMIC_RELEASE);
  return 0;
}

static int
fd_resize (struct backend *b, uint64_t size, struct qmp_error *err)
{
  struct fd_backend *f = (struct fd_backend *) b;
  int r;

  if (f->is_block) {
    qmp_error (err, "Cannot %s device files",
               size > b->size ? "grow" : "shrink");
    return -1;
  }
  if (fd_open_rw (b, err) == -1)
    return -1;
  do
    r = ftruncate (f->rwfd, size);
  while (r == -1 && errno == EINTR);
  if (r == -1) {
    qmp_error (err, "Could not resize '%s': %s",
               f->path, strerror (errno));
    return -1;
  }
  return 0;
}

/* The descriptor that is always open: the same file as rwfd. */
static int
fd_identify (struct backend *b, struct stat *st)
{
  struct fd_backend *f = (struct fd_backend *) b;

  return fstat (f->rdfd, st);
}

static void
fd_close (struct backend *b)
{
  struct fd_backend *f = (struct fd_backend *) b;

  if (f->rwfd >= 0 && f->rwfd != f->rdfd)
    close (f->rwfd);
  if (f->rdfd >= 0)
    close (f->rdfd);
  pthread_mutex_destroy (&f->rw_lock);
  free (f->path);
  free (f);
}

static const struct backend_ops fd_ops = {
  .pread = fd_pread,
  .pwrite = fd_pwrite,
  .zero = fd_zero,
  .trim = fd_trim,
  .flush = fd_flush,
  .extents = fd_extents,
  .cache = fd_cache,
  .open_rw = fd_open_rw,
  .resize = fd_resize,
  .identify = fd_identify,
  .close = fd_close,
};

/* Fills in the kind and size from the open descriptor. */
static int
probe (struct fd_backend *f, struct qmp_error *err)
{
  struct stat st;

  if (fstat (f->rdfd, &st) == -1) {
    qmp_error (err, "Could not open '%s': %s", f->path, strerror (errno));
    return -1;
  }
  if (S_ISREG (st.st_mode)) {
    f->b.driver = "file";
    f->b.size = st.st_size;
    return 0;
  }
  if (!S_ISBLK (st.st_mode)) {
    qmp_error (err, "Could not open '%s': not a regular file "
               "or a block device", f->path);
    return -1;
  }
  f->is_block = true;
  f->b.driver = "host_device";
  if (ioctl (f->rdfd, BLKGETSIZE64, &f->b.size) == -1) {
    qmp_error (err, "Could not get the size of '%s': %s",
               f->path, strerror (errno));
    return -1;
  }
  return 0;
}

struct backend *
file_backend_open (const char *path, bool readonly, bool defer_rw,
                   struct qmp_error *err)
{
  bool rw_now = !readonly && !defer_rw;
  struct fd_backend *f;

  f = calloc (1, sizeof *f);
  if (f == NULL || (f->path = strdup (path)) == NULL) {
    qmp_error (err, "%s", strerror (errno));
    free (f);
    return NULL;
  }
  f->b.ops = &fd_ops;
  f->rwfd = -1;
  pthread_mutex_init (&f->rw_lock, NULL);

  f->rdfd = open_path (path, rw_now ? O_RDWR : O_RDONLY);
  if (f->rdfd == -1) {
    qmp_error (err, "Could not open '%s': %s", path, strerror (errno));
    fd_close (&f->b);
    return NULL;
  }
  if (probe (f, err) == -1) {
    fd_close (&f->b);
    return NULL;
  }
  if (rw_now)
    f->rwfd = f->rdfd;

  f->b.can_flush = f->b.can_trim = f->b.can_fua = f->b.can_cache = true;
  return &f->b;
}
