/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Unit tests of the block-copy engine over a disk in memory (the
 * plugin below is a struct nbdkit_next_ops whose pread reads a buffer):
 * saved blocks keep the frozen data after the disk changes, NEEDED
 * limits what is saved, a large save does not hold every stripe of its
 * range at once (a reader elsewhere in the range is served while the
 * saver is stuck), and discarded scratch makes reads fail, never
 * return other data.
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bitmap.h"
#include "engines/block-copy.h"
#include "test-check.h"

#define MiB (1024 * 1024)
#define SIZE (16 * MiB)


/* nbdkit's message functions, which the engine calls. */
void
nbdkit_error (const char *fs, ...)
{
  va_list ap;

  va_start (ap, fs);
  vfprintf (stderr, fs, ap);
  va_end (ap);
  fputc ('\n', stderr);
}

void
nbdkit_debug (const char *fs, ...)
{
}

/* The disk, and a pread that can be made to wait at offset 0. */
static unsigned char *disk;
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_closed, saver_waiting;

static int
disk_pread (nbdkit_next *next, void *buf, uint32_t count, uint64_t offset,
            uint32_t flags, int *err)
{
  if (offset == 0) {
    pthread_mutex_lock (&gate_lock);
    saver_waiting = true;
    pthread_cond_broadcast (&gate_cond);
    while (gate_closed)
      pthread_cond_wait (&gate_cond, &gate_lock);
    saver_waiting = false;
    pthread_mutex_unlock (&gate_lock);
  }
  if (offset + count > SIZE) {
    *err = EINVAL;
    return -1;
  }
  memcpy (buf, disk + offset, count);
  return 0;
}

static struct nbdkit_next_ops plugin = { .pread = disk_pread };

static void
fill (unsigned char *p, size_t n, unsigned seed)
{
  size_t i;

  for (i = 0; i < n; i++)
    p[i] = (unsigned char) (seed * 131 + i * 7 + (i >> 12));
}

static struct block_copy *
new_block_copy (void)
{
  struct qmp_error err = { 0 };
  struct block_copy *bc = block_copy_new ("test", SIZE, getenv ("TMPDIR"),
                                          &err);

  if (bc == NULL) {
    fprintf (stderr, "block_copy_new: %s\n", err.desc);
    exit (EXIT_FAILURE);
  }
  return bc;
}

static bool
reads (struct block_copy *bc, uint64_t offset, uint32_t count,
       const unsigned char *want)
{
  unsigned char *buf = malloc (count);
  int err = 0;
  bool ok = buf && block_copy_read (bc, &plugin, buf, count, offset,
                                    &err) == 0 &&
    memcmp (buf, want, count) == 0;

  free (buf);
  return ok;
}

static void
test_frozen (void)
{
  struct block_copy *bc = new_block_copy ();
  unsigned char *frozen = malloc (SIZE);

  fill (disk, SIZE, 1);
  memcpy (frozen, disk, SIZE);
  /* A "guest write" of [1 MiB + 100, 9 MiB): saved first, then done. */
  CHECK (block_copy_save (bc, &plugin, MiB + 100, 9 * MiB, NULL) == 0);
  fill (disk + MiB + 100, 8 * MiB - 100, 2);
  CHECK (block_copy_copied_bytes (bc) == 8 * MiB);
  CHECK (!block_copy_is_saved (bc, MiB - 1) && block_copy_is_saved (bc, MiB));
  CHECK (block_copy_saved_run_end (bc, MiB, SIZE) == 9 * MiB);
  CHECK (reads (bc, 0, 10 * MiB, frozen));
  CHECK (reads (bc, MiB + 4095, 3, frozen + MiB + 4095));
  /* Saving again copies nothing. */
  CHECK (block_copy_save (bc, &plugin, MiB, 9 * MiB, NULL) == 0 &&
         block_copy_copied_bytes (bc) == 8 * MiB);
  /* Discarded: saved blocks fail, unsaved ones still read the disk. */
  block_copy_discard (bc);
  {
    unsigned char buf[4096];
    int err = 0;
    CHECK (block_copy_read (bc, &plugin, buf, 4096, 2 * MiB, &err) == -1 &&
           err == EIO);
  }
  CHECK (reads (bc, 12 * MiB, MiB, disk + 12 * MiB));
  block_copy_free (bc);
  free (frozen);
}

static void
test_needed (void)
{
  struct block_copy *bc = new_block_copy ();
  struct bitmap *needed = bitmap_new (SIZE, 65536);

  fill (disk, SIZE, 3);
  bitmap_set_range (needed, 65536, 1);                  /* chunk 1 */
  bitmap_set_range (needed, 3 * 65536, 2 * 65536);      /* chunks 3, 4 */
  CHECK (block_copy_save (bc, &plugin, 0, 8 * 65536, needed) == 0);
  CHECK (block_copy_copied_bytes (bc) == 3 * 65536);
  CHECK (!block_copy_is_saved (bc, 0) && block_copy_is_saved (bc, 65536) &&
         !block_copy_is_saved (bc, 2 * 65536) &&
         block_copy_is_saved (bc, 4 * 65536 + 4095) &&
         !block_copy_is_saved (bc, 5 * 65536));
  bitmap_free (needed);
  block_copy_free (bc);
}

struct job {
  struct block_copy *bc;
  int r;                        /* read after done */
  bool done;                    /* atomic */
};

static void *
saver (void *p)
{
  struct job *j = p;

  j->r = block_copy_save (j->bc, &plugin, 0, 8 * MiB, NULL);
  __atomic_store_n (&j->done, true, __ATOMIC_SEQ_CST);
  return NULL;
}

static void *
reader (void *p)
{
  struct job *j = p;
  unsigned char buf[4096];
  int err;

  j->r = block_copy_read (j->bc, &plugin, buf, sizeof buf, 6 * MiB, &err);
  __atomic_store_n (&j->done, true, __ATOMIC_SEQ_CST);
  return NULL;
}

/* Bounded wait for a flag: a failure guard, not a speed check. */
static bool
wait_flag (bool *flag)
{
  int i;

  for (i = 0; i < 10000 && !__atomic_load_n (flag, __ATOMIC_SEQ_CST); i++)
    usleep (1000);
  return __atomic_load_n (flag, __ATOMIC_SEQ_CST);
}

static void
test_stripes_of_a_large_save (void)
{
  struct block_copy *bc = new_block_copy ();
  struct job s = { bc, 0, false }, r = { bc, 0, false };
  pthread_t ts, tr;

  fill (disk, SIZE, 4);
  gate_closed = true;
  pthread_create (&ts, NULL, saver, &s);
  pthread_mutex_lock (&gate_lock);
  while (!saver_waiting)
    pthread_cond_wait (&gate_cond, &gate_lock);
  pthread_mutex_unlock (&gate_lock);
  /* The saver is stuck reading offset 0 of its 8 MiB range; a read at
   * 6 MiB, in the same range, must not wait for it.
   */
  pthread_create (&tr, NULL, reader, &r);
  CHECK (wait_flag (&r.done) && r.r == 0);
  CHECK (!__atomic_load_n (&s.done, __ATOMIC_SEQ_CST));
  pthread_mutex_lock (&gate_lock);
  gate_closed = false;
  pthread_cond_broadcast (&gate_cond);
  pthread_mutex_unlock (&gate_lock);
  pthread_join (ts, NULL);
  pthread_join (tr, NULL);
  CHECK (s.r == 0 && block_copy_copied_bytes (bc) == 8 * MiB);
  block_copy_free (bc);
}

int
main (void)
{
  disk = malloc (SIZE);
  if (disk == NULL)
    return EXIT_FAILURE;
  test_frozen ();
  test_needed ();
  test_stripes_of_a_large_save ();
  free (disk);
  return test_report ();
}
