/* The data path of backups: copy-before-write on guest writes, and
 * reads and block status of backup exports.  Locking: backup.h.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "cleanup.h"
#include "rounding.h"
#include "bitmap.h"
#include "backup.h"

static pthread_rwlock_t *
stripe (struct backup_disk *bd, uint64_t offset)
{
  return &bd->stripes[(offset / BACKUP_REGION) % BACKUP_STRIPES];
}

/* True when the backup no longer serves data.  Read without the lock:
 * this is on every guest write, and the flags only ever turn true.
 */
static bool
backup_dead (struct backup *b)
{
  return __atomic_load_n (&b->ended, __ATOMIC_SEQ_CST) ||
    __atomic_load_n (&b->failed, __ATOMIC_SEQ_CST);
}

static void
backup_fail (struct backup *b, const char *what, int errnum)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&b->lock);
  if (!b->failed) {
    __atomic_store_n (&b->failed, true, __ATOMIC_SEQ_CST);
    if (asprintf (&b->error, "%s: %s", what, strerror (errnum)) == -1)
      b->error = NULL;
    nbdkit_error ("checkpoint: backup %s failed: %s: %s", b->id, what,
                  strerror (errnum));
  }
}

/* Write or read [OFFSET, OFFSET+N) of scratch, piece by piece (each
 * piece lives at its own offset in one of the scratch files).  -1 with
 * errno on error (ENOSPC for a short write).
 */
static int
scratch_io (struct backup_disk *bd, bool write, char *buf, size_t n,
            uint64_t offset)
{
  while (n > 0) {
    size_t len = MIN (n, SCRATCH_PIECE - offset % SCRATCH_PIECE);
    int fd = bd->scratch_fds[(offset / SCRATCH_PIECE) % SCRATCH_FILES];
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

static bool
block_needed (struct backup_disk *bd, uint64_t offset)
{
  return bd->needed == NULL || bitmap_test (bd->needed, offset);
}

/* Largest single read and write when saving a run of blocks. */
#define SAVE_IO_MAX (4 * 1024 * 1024)

static bool
block_to_save (struct backup_disk *bd, uint64_t offset)
{
  return !bitmap_test (bd->saved, offset) && block_needed (bd, offset);
}

/* Copy [POS, END) from the disk to scratch and mark it saved. */
static int
save_run (nbdkit_next *next, struct backup_disk *bd, char *buf,
          uint64_t pos, uint64_t end)
{
  int err = 0;

  while (pos < end) {
    uint32_t n = MIN (end - pos, SAVE_IO_MAX);

    if (next->pread (next, buf, n, pos, 0, &err) == -1) {
      errno = err ? err : EIO;
      return -1;
    }
    if (scratch_io (bd, true, buf, n, pos) == -1)
      return -1;
    bitmap_set_range (bd->saved, pos, n);
    __atomic_add_fetch (&bd->backup->copied_bytes, n, __ATOMIC_RELAXED);
    pos += n;
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
  return buf;
}

/* Save the needed, unsaved blocks of [START, END), in runs as long as
 * they are contiguous (one read and one write per run, not per
 * region).  The stripes of the range are held exclusive.
 */
static int
save_range (nbdkit_next *next, struct backup_disk *bd,
            uint64_t start, uint64_t end)
{
  char *buf = NULL;
  uint64_t pos = start, run;

  while (pos < end) {
    if (!block_to_save (bd, pos)) {
      pos += MIN (BACKUP_BLOCK, end - pos);
      continue;
    }
    for (run = pos; run < end && block_to_save (bd, run); )
      run += MIN (BACKUP_BLOCK, end - run);
    if (buf == NULL && (buf = thread_buffer ()) == NULL)
      return -1;
    if (save_run (next, bd, buf, pos, run) == -1)
      return -1;
    pos = run;
  }
  return 0;
}

/* The stripes that cover [START, END), locked or unlocked in
 * ascending order (so two writers never wait on each other in a
 * cycle; readers hold one stripe at a time).
 */
static void
stripe_op (struct backup_disk *bd, size_t i, bool lock)
{
  if (lock)
    pthread_rwlock_wrlock (&bd->stripes[i]);
  else
    pthread_rwlock_unlock (&bd->stripes[i]);
}

static void
lock_stripes (struct backup_disk *bd, uint64_t start, uint64_t end,
              bool lock)
{
  uint64_t first = start / BACKUP_REGION, last = (end - 1) / BACKUP_REGION;
  size_t i, lo = first % BACKUP_STRIPES, hi = last % BACKUP_STRIPES;

  if (last - first >= BACKUP_STRIPES - 1) {     /* every stripe */
    for (i = 0; i < BACKUP_STRIPES; i++)
      stripe_op (bd, i, lock);
  }
  else if (lo <= hi) {
    for (i = lo; i <= hi; i++)
      stripe_op (bd, i, lock);
  }
  else {                        /* wraps: 0..hi, then lo..end */
    for (i = 0; i <= hi; i++)
      stripe_op (bd, i, lock);
    for (i = lo; i < BACKUP_STRIPES; i++)
      stripe_op (bd, i, lock);
  }
}

/* Save what BD needs of [OFFSET, END) before it is overwritten. */
static int
save_before_write (nbdkit_next *next, struct backup_disk *bd,
                   uint64_t offset, uint64_t end)
{
  uint64_t start = ROUND_DOWN (offset, BACKUP_BLOCK);
  int r;

  end = MIN (ROUND_UP (end, BACKUP_BLOCK), bd->size);
  if (start >= end)
    return 0;
  /* Most writes during a backup land on saved or unneeded blocks. */
  if (bitmap_all_dirty (bd->saved, start, end - start) ||
      (bd->needed && !bitmap_any_dirty (bd->needed, start, end - start)))
    return 0;
  lock_stripes (bd, start, end, true);
  r = save_range (next, bd, start, end);
  lock_stripes (bd, start, end, false);
  return r;
}

int
backup_before_write (nbdkit_next *next, struct node *n,
                     uint32_t count, uint64_t offset, int *err)
{
  struct backup_disk *bd;

  for (bd = n->backups; bd; bd = bd->next_on_node) {
    if (offset >= bd->size || backup_dead (bd->backup))
      continue;
    /* Before anything lands: reads of unneeded chunks check this (a
     * full backup has none).
     */
    if (bd->needed)
      bitmap_set_range (bd->changed, offset, count);
    if (save_before_write (next, bd, offset, offset + count) == 0)
      continue;
    if (bd->backup->on_cbw_error == BREAK_GUEST_WRITE) {
      *err = errno;
      nbdkit_error ("checkpoint: copy-before-write for backup %s: %m; "
                    "the write fails (on-cbw-error=break-guest-write)",
                    bd->backup->id);
      return -1;
    }
    backup_fail (bd->backup, "copy-before-write failed", errno);
  }
  return 0;
}

/* Read [POS, END) of one region of the frozen view (stripe held
 * shared): saved blocks from scratch, the rest from the disk.
 */
static int
read_region (nbdkit_next *next, struct backup_disk *bd, char *buf,
             uint64_t pos, uint64_t end, int *err)
{
  while (pos < end) {
    bool saved = bitmap_test (bd->saved, pos);
    uint64_t run = pos;

    do
      run = MIN (ROUND_DOWN (run, BACKUP_BLOCK) + BACKUP_BLOCK, end);
    while (run < end && bitmap_test (bd->saved, run) == saved);
    if (saved) {
      if (scratch_io (bd, false, buf, run - pos, pos) == -1) {
        *err = errno;
        nbdkit_error ("checkpoint: reading scratch of backup %s: %m",
                      bd->backup->id);
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

/* Chunks an incremental backup does not cover: the disk's data is the
 * frozen data only while nothing has written there since the freeze.
 */
static bool
unneeded_changed (struct backup_disk *bd, uint64_t offset, uint32_t count)
{
  uint64_t pos;

  if (bd->needed == NULL)
    return false;
  for (pos = offset; pos < offset + count;
       pos = ROUND_DOWN (pos, BACKUP_BLOCK) + BACKUP_BLOCK)
    if (!bitmap_test (bd->needed, pos) && bitmap_test (bd->changed, pos))
      return true;
  return false;
}

static int
dead_error (struct backup_disk *bd, int *err)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&bd->backup->lock);
  nbdkit_error ("checkpoint: backup %s has %s%s%s", bd->backup->id,
                bd->backup->ended ? "ended" : "failed",
                bd->backup->error ? ": " : "",
                bd->backup->error ? bd->backup->error : "");
  *err = EIO;
  return -1;
}

int
backup_pread (nbdkit_next *next, struct backup_disk *bd, void *buf,
              uint32_t count, uint64_t offset, int *err)
{
  uint64_t pos = offset, end = offset + count;
  char *p = buf;

  if (backup_dead (bd->backup))
    return dead_error (bd, err);
  while (pos < end) {
    uint64_t region_end = MIN (ROUND_DOWN (pos, BACKUP_REGION) + BACKUP_REGION,
                               end);
    int r;

    pthread_rwlock_rdlock (stripe (bd, pos));
    r = read_region (next, bd, p, pos, region_end, err);
    pthread_rwlock_unlock (stripe (bd, pos));
    if (r == -1)
      return -1;
    p += region_end - pos;
    pos = region_end;
  }
  /* After the read: a failure or a write that raced with us shows here
   * (both are recorded before the write lands).
   */
  if (backup_dead (bd->backup))
    return dead_error (bd, err);
  if (unneeded_changed (bd, offset, count)) {
    nbdkit_error ("checkpoint: backup %s: [%" PRIu64 ", +%" PRIu32 ") is "
                  "not in the incremental backup and has changed since",
                  bd->backup->id, offset, count);
    *err = EIO;
    return -1;
  }
  return 0;
}

/* The end of the run from POS with the same answer of BM (NULL: one
 * run to END).
 */
static uint64_t
run_end (const struct bitmap *bm, uint64_t pos, uint64_t end)
{
  uint64_t found;

  if (bm == NULL ||
      !bitmap_find (bm, pos, !bitmap_test (bm, pos), &found) || found > end)
    return end;
  return found;
}

/* Add [POS, END) of plugin extent type TYPE, split where the frozen
 * view differs: unneeded chunks are holes without zero ("read it from
 * the base"), saved blocks are data.
 */
static int
add_frozen (struct backup_disk *bd, struct nbdkit_extents *out,
            uint64_t pos, uint64_t end, uint32_t type)
{
  while (pos < end) {
    uint64_t next_pos = MIN (run_end (bd->needed, pos, end),
                             run_end (bd->saved, pos, end));
    uint32_t t = type;

    if (!block_needed (bd, pos))
      t = NBDKIT_EXTENT_HOLE;
    else if (bitmap_test (bd->saved, pos))
      t = 0;
    if (nbdkit_add_extent (out, pos, next_pos - pos, t) == -1)
      return -1;
    pos = next_pos;
  }
  return 0;
}

int
backup_extents (nbdkit_next *next, struct backup_disk *bd, uint32_t count,
                uint64_t offset, uint32_t flags,
                struct nbdkit_extents *extents, int *err)
{
  uint64_t end = MIN (offset + count, bd->size);
  struct nbdkit_extents *plugin;
  size_t i;

  if (backup_dead (bd->backup))
    return dead_error (bd, err);
  if (!next->can_extents (next))
    return add_frozen (bd, extents, offset, end, 0) == -1 ? (*err = errno, -1) : 0;
  plugin = nbdkit_extents_new (offset, end);
  if (plugin == NULL) {
    *err = errno;
    return -1;
  }
  if (next->extents (next, end - offset, offset, flags & ~NBDKIT_FLAG_REQ_ONE,
                     plugin, err) == -1) {
    nbdkit_extents_free (plugin);
    return -1;
  }
  for (i = 0; i < nbdkit_extents_count (plugin); i++) {
    struct nbdkit_extent e = nbdkit_get_extent (plugin, i);
    uint64_t s = MAX (e.offset, offset), f = MIN (e.offset + e.length, end);
    if (s < f && add_frozen (bd, extents, s, f, e.type) == -1) {
      *err = errno;
      nbdkit_extents_free (plugin);
      return -1;
    }
  }
  nbdkit_extents_free (plugin);
  return 0;
}
