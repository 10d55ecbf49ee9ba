/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The block-copy engine (see block-copy.h).
 *
 * Saved blocks live at their own disk offset in scratch, spread over
 * SCRATCH_FILES sparse files by SCRATCH_PIECE pieces, so that
 * concurrent copies do not all queue on one file's inode lock.  Runs
 * of contiguous blocks to save are copied with one read and one write
 * (up to SAVE_IO_MAX), through a buffer kept per thread.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/resource.h>

#include "cleanup.h"
#include "rounding.h"
#include "bitmap.h"
#include "engines/block-copy.h"

/* Saved-block lookups and locks go by regions of this size. */
#define REGION (64 * 1024)
#define STRIPES 1024
#define SCRATCH_FILES BLOCK_COPY_FDS
#define SCRATCH_PIECE (1024 * 1024)
/* Largest single read and write when saving a run of blocks. */
#define SAVE_IO_MAX (4 * 1024 * 1024)

struct block_copy {
  char *name;
  uint64_t size;
  int scratch_fds[SCRATCH_FILES];
  struct bitmap *saved;         /* BLOCK_COPY_BLOCK granularity */
  bool discarded;               /* atomic: scratch given back */
  uint64_t copied_bytes;        /* atomic */
  pthread_rwlock_t stripes[STRIPES];
};

/* An unnamed, sparse scratch file that vanishes with its descriptor. */
static int
open_scratch (const char *dir)
{
  CLEANUP_FREE char *path = NULL;
  int fd;

  fd = open (dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR))
    return fd;
  if (asprintf (&path, "%s/scratch.XXXXXX", dir) == -1)
    return -1;
  fd = mkostemp (path, O_CLOEXEC);
  if (fd >= 0)
    unlink (path);
  return fd;
}

struct block_copy *
block_copy_new (const char *name, uint64_t size, const char *dir,
                struct qmp_error *err)
{
  struct block_copy *bc = calloc (1, sizeof *bc);
  size_t i;

  if (dir == NULL)
    dir = getenv ("TMPDIR") ? getenv ("TMPDIR") : "/var/tmp";
  if (bc == NULL) {
    qmp_error (err, "out of memory");
    return NULL;
  }
  bc->size = size;
  for (i = 0; i < SCRATCH_FILES; i++)
    bc->scratch_fds[i] = -1;
  for (i = 0; i < STRIPES; i++)
    pthread_rwlock_init (&bc->stripes[i], NULL);
  bc->name = strdup (name);
  bc->saved = bitmap_new (size, BLOCK_COPY_BLOCK);
  if (bc->name == NULL || bc->saved == NULL) {
    qmp_error (err, "out of memory");
    block_copy_free (bc);
    return NULL;
  }
  for (i = 0; i < SCRATCH_FILES; i++)
    if ((bc->scratch_fds[i] = open_scratch (dir)) == -1) {
      qmp_error (err, "Cannot create a scratch file in %s: %s",
                 dir, strerror (errno));
      block_copy_free (bc);
      return NULL;
    }
  return bc;
}

void
block_copy_free (struct block_copy *bc)
{
  size_t i;

  if (bc == NULL)
    return;
  for (i = 0; i < SCRATCH_FILES; i++)
    if (bc->scratch_fds[i] >= 0)
      close (bc->scratch_fds[i]);
  for (i = 0; i < STRIPES; i++)
    pthread_rwlock_destroy (&bc->stripes[i]);
  bitmap_free (bc->saved);
  free (bc->name);
  free (bc);
}

/* Readers check DISCARDED under their stripe before they touch
 * scratch; taking each stripe once afterwards waits for the reads that
 * were already under way.  One stripe at a time, not all at once: no
 * lock checker's limit of locks held is reached.
 */
void
block_copy_discard (struct block_copy *bc)
{
  size_t i;

  __atomic_store_n (&bc->discarded, true, __ATOMIC_SEQ_CST);
  for (i = 0; i < STRIPES; i++) {
    pthread_rwlock_wrlock (&bc->stripes[i]);
    pthread_rwlock_unlock (&bc->stripes[i]);
  }
  for (i = 0; i < SCRATCH_FILES; i++)
    if (ftruncate (bc->scratch_fds[i], 0) == -1)
      nbdkit_debug ("checkpoint: discarding scratch of %s: %m", bc->name);
}

/* Write or read [OFFSET, OFFSET+N) of scratch, piece by piece.  -1
 * with errno on error (ENOSPC for a short write).
 */
static int
scratch_io (struct block_copy *bc, bool write, char *buf, size_t n,
            uint64_t offset)
{
  while (n > 0) {
    size_t len = MIN (n, SCRATCH_PIECE - offset % SCRATCH_PIECE);
    int fd = bc->scratch_fds[(offset / SCRATCH_PIECE) % SCRATCH_FILES];
    ssize_t r;

    errno = 0;
    r = write ? pwrite (fd, buf, len, offset) : pread (fd, buf, len, offset);
    if (r != (ssize_t) len) {
      if (errno == 0)
        errno = write ? ENOSPC : EIO;
      return -1;
    }
    buf += len;
    offset += len;
    n -= len;
  }
  return 0;
}

/* A copy buffer per thread, kept between writes: a fresh megabyte
 * per write costs its page faults every time.
 */
static pthread_key_t buffer_key;
static pthread_once_t buffer_once = PTHREAD_ONCE_INIT;

static void
make_buffer_key (void)
{
  pthread_key_create (&buffer_key, free);
}

static char *
thread_buffer (void)
{
  char *buf;

  pthread_once (&buffer_once, make_buffer_key);
  buf = pthread_getspecific (buffer_key);
  if (buf == NULL) {
    buf = malloc (SAVE_IO_MAX);
    if (buf && pthread_setspecific (buffer_key, buf) != 0) {
      free (buf);
      buf = NULL;
    }
  }
  if (buf == NULL)
    errno = ENOMEM;
  return buf;
}

/* Copy [POS, END) from the disk to scratch and mark it saved: only
 * then may a reader take it from scratch.
 */
static int
save_run (nbdkit_next *next, struct block_copy *bc, char *buf,
          uint64_t pos, uint64_t end)
{
  int err = 0;

  while (pos < end) {
    uint32_t n = MIN (end - pos, SAVE_IO_MAX);

    if (next->pread (next, buf, n, pos, 0, &err) == -1) {
      errno = err ? err : EIO;
      return -1;
    }
    if (scratch_io (bc, true, buf, n, pos) == -1 ||
        bitmap_set_range (bc->saved, pos, n) == -1)
      return -1;
    __atomic_add_fetch (&bc->copied_bytes, n, __ATOMIC_RELAXED);
    pos += n;
  }
  return 0;
}

static bool
block_to_save (struct block_copy *bc, uint64_t offset,
               const struct bitmap *needed, const struct bitmap *skip)
{
  return !bitmap_test (bc->saved, offset) &&
    (needed == NULL || bitmap_test (needed, offset)) &&
    (skip == NULL || !bitmap_test (skip, offset));
}

/* Save the needed, unsaved blocks of [START, END), in runs as long as
 * they are contiguous.  The stripes of the range are held exclusive.
 */
static int
save_range (nbdkit_next *next, struct block_copy *bc, uint64_t start,
            uint64_t end, const struct bitmap *needed,
            const struct bitmap *skip)
{
  char *buf = NULL;
  uint64_t pos = start, run;

  while (pos < end) {
    if (!block_to_save (bc, pos, needed, skip)) {
      pos += MIN (BLOCK_COPY_BLOCK, end - pos);
      continue;
    }
    for (run = pos; run < end && block_to_save (bc, run, needed, skip); )
      run += MIN (BLOCK_COPY_BLOCK, end - run);
    if (buf == NULL && (buf = thread_buffer ()) == NULL)
      return -1;
    if (save_run (next, bc, buf, pos, run) == -1)
      return -1;
    pos = run;
  }
  return 0;
}

/* The stripes that cover [START, END), locked or unlocked in
 * ascending order (so two savers never wait on each other in a cycle;
 * readers hold one stripe at a time).
 */
enum stripe_op { STRIPES_WRITE, STRIPES_READ, STRIPES_UNLOCK };

static void
stripe_op (struct block_copy *bc, size_t i, enum stripe_op lock)
{
  switch (lock) {
  case STRIPES_WRITE:
    pthread_rwlock_wrlock (&bc->stripes[i]);
    break;
  case STRIPES_READ:
    pthread_rwlock_rdlock (&bc->stripes[i]);
    break;
  case STRIPES_UNLOCK:
    pthread_rwlock_unlock (&bc->stripes[i]);
    break;
  }
}

/* The stripes of [START, END), always in ascending order of index (so
 * that readers and writers of overlapping windows never wait on each
 * other in a circle).
 */
static void
lock_stripes (struct block_copy *bc, uint64_t start, uint64_t end,
              enum stripe_op lock)
{
  uint64_t first = start / REGION, last = (end - 1) / REGION;
  size_t i, lo = first % STRIPES, hi = last % STRIPES;

  if (last - first >= STRIPES - 1) {    /* every stripe */
    for (i = 0; i < STRIPES; i++)
      stripe_op (bc, i, lock);
  }
  else if (lo <= hi) {
    for (i = lo; i <= hi; i++)
      stripe_op (bc, i, lock);
  }
  else {                        /* wraps: 0..hi, then lo..end */
    for (i = 0; i <= hi; i++)
      stripe_op (bc, i, lock);
    for (i = lo; i < STRIPES; i++)
      stripe_op (bc, i, lock);
  }
}

/* A large write is saved window by window, holding the stripes of one
 * window at a time (so a lock checker's limit of locks held at once is
 * never reached, and readers elsewhere in the range are not held up).
 * That is safe: a window's blocks are saved and marked before its
 * stripes are released, and the write itself lands only after every
 * window is done (the caller holds the node's barrier throughout).
 */
#define SAVE_WINDOW (32 * REGION)

int
block_copy_save (struct block_copy *bc, nbdkit_next *next,
                 uint64_t offset, uint64_t end, const struct bitmap *needed)
{
  return block_copy_save_skip (bc, next, offset, end, needed, NULL);
}

int
block_copy_save_skip (struct block_copy *bc, nbdkit_next *next,
                      uint64_t offset, uint64_t end,
                      const struct bitmap *needed, const struct bitmap *skip)
{
  uint64_t start = ROUND_DOWN (offset, BLOCK_COPY_BLOCK), w, w_end;

  end = MIN (ROUND_UP (end, BLOCK_COPY_BLOCK), bc->size);
  if (start >= end)
    return 0;
  /* Most writes during a backup land on saved or unneeded blocks. */
  if (bitmap_all_dirty (bc->saved, start, end - start) ||
      (needed && !bitmap_any_dirty (needed, start, end - start)) ||
      (skip && bitmap_all_dirty (skip, start, end - start)))
    return 0;
  for (w = start; w < end; w = w_end) {
    int r;

    w_end = MIN (ROUND_DOWN (w, SAVE_WINDOW) + SAVE_WINDOW, end);
    lock_stripes (bc, w, w_end, STRIPES_WRITE);
    r = save_range (next, bc, w, w_end, needed, skip);
    lock_stripes (bc, w, w_end, STRIPES_UNLOCK);
    if (r == -1)
      return -1;
  }
  return 0;
}

/* Read [POS, END) of one window (its stripes held shared): saved
 * blocks from scratch, each run of the rest from the disk in one
 * request.
 */
static int
read_window (struct block_copy *bc, nbdkit_next *next, char *buf,
             uint64_t pos, uint64_t end, int *err)
{
  while (pos < end) {
    bool saved = bitmap_test (bc->saved, pos);
    uint64_t run = pos;

    do
      run = MIN (ROUND_DOWN (run, BLOCK_COPY_BLOCK) + BLOCK_COPY_BLOCK, end);
    while (run < end && bitmap_test (bc->saved, run) == saved);
    if (saved) {
      bool gone = __atomic_load_n (&bc->discarded, __ATOMIC_SEQ_CST);
      if (gone || scratch_io (bc, false, buf, run - pos, pos) == -1) {
        *err = gone ? EIO : errno;
        nbdkit_error ("checkpoint: reading scratch of %s: %s", bc->name,
                      gone ? "its scratch was given back"
                           : strerror (errno));
        return -1;
      }
    }
    else if (next->pread (next, buf, run - pos, pos, 0, err) == -1)
      return -1;
    buf += run - pos;
    pos = run;
  }
  return 0;
}

int
block_copy_read (struct block_copy *bc, nbdkit_next *next, void *buf,
                 uint32_t count, uint64_t offset, int *err)
{
  uint64_t pos = offset, end = offset + count;
  char *p = buf;

  /* By windows, as saves go: a large read is one request per run,
   * not one per region.
   */
  while (pos < end) {
    uint64_t w_end = MIN (ROUND_DOWN (pos, SAVE_WINDOW) + SAVE_WINDOW, end);
    int r;

    lock_stripes (bc, pos, w_end, STRIPES_READ);
    r = read_window (bc, next, p, pos, w_end, err);
    lock_stripes (bc, pos, w_end, STRIPES_UNLOCK);
    if (r == -1)
      return -1;
    p += w_end - pos;
    pos = w_end;
  }
  return 0;
}

bool
block_copy_is_saved (const struct block_copy *bc, uint64_t offset)
{
  return bitmap_test (bc->saved, offset);
}

uint64_t
block_copy_saved_run_end (const struct block_copy *bc, uint64_t pos,
                          uint64_t end)
{
  return bitmap_run_end (bc->saved, pos, end);
}

uint64_t
block_copy_copied_bytes (const struct block_copy *bc)
{
  return __atomic_load_n (&bc->copied_bytes, __ATOMIC_RELAXED);
}

static long
open_fds (void)
{
  DIR *d = opendir ("/proc/self/fd");
  long n = -1;                  /* the directory's own */

  if (d == NULL)
    return -1;
  while (readdir (d))
    n++;
  closedir (d);
  return n - 2;                 /* "." and ".." */
}

/* Refusing up front beats failing later: a backup that took the last
 * descriptors would leave none to save state with or to end it by.
 */
int
block_copy_fd_budget (size_t nr, unsigned extra, const char *what,
                      struct qmp_error *err)
{
  struct rlimit rl;
  long used = open_fds ();
  unsigned long need = nr * BLOCK_COPY_FDS + extra;

  if (used < 0 || getrlimit (RLIMIT_NOFILE, &rl) == -1 ||
      rl.rlim_cur == RLIM_INFINITY)
    return 0;
  if (used + need + BLOCK_COPY_FDS_RESERVED > rl.rlim_cur) {
    qmp_error (err, "Cannot %s of %zu disk(s): it needs %lu file "
               "descriptors (%d per disk) and %lu of the limit of %lu are "
               "in use, %d kept free (raise ulimit -n, or end other "
               "backups)", what, nr, need, BLOCK_COPY_FDS,
               (unsigned long) used, (unsigned long) rl.rlim_cur,
               BLOCK_COPY_FDS_RESERVED);
    return -1;
  }
  return 0;
}
