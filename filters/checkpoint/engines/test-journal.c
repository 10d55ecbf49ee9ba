/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Unit tests of the write journal: records read back as appended, a
 * torn last record dropped, damage found (a flipped bit in a record,
 * the magic, the header), a fresh start replacing the old file, and
 * power mode's group commit losing nothing with many threads.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engines/journal.h"

static int passed, failed;

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (cond)                                                           \
      passed++;                                                         \
    else {                                                              \
      fprintf (stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond); \
      failed++;                                                         \
    }                                                                   \
  } while (0)

static char dir[] = "/tmp/test-journal-XXXXXX";
static char path[64];

static off_t
file_size (void)
{
  FILE *f = fopen (path, "rb");
  off_t n = -1;

  if (f && fseeko (f, 0, SEEK_END) == 0)
    n = ftello (f);
  if (f)
    fclose (f);
  return n;
}

/* XOR MASK into the byte at OFFSET of the journal. */
static void
poke (off_t offset, unsigned char mask)
{
  int fd = open (path, O_RDWR);
  unsigned char c = 0;

  if (fd == -1 || pread (fd, &c, 1, offset) != 1)
    abort ();
  c ^= mask;
  if (pwrite (fd, &c, 1, offset) != 1)
    abort ();
  close (fd);
}

static void
test_records (void)
{
  char *names[] = { (char *) "a", (char *) "b" };
  struct journal *j = journal_new (false);
  struct journal_contents c;
  off_t size;
  int fd;

  CHECK (j && !journal_started (j));
  CHECK (journal_start (j, dir, "d0", names, 2) == 0);
  CHECK (journal_covers (j, names, 2));
  CHECK (!journal_covers (j, names, 1));
  CHECK (journal_append (j, 0, 4096) == 0);
  CHECK (journal_append (j, 1 << 20, 1) == 0);
  CHECK (journal_append (j, UINT64_C (1) << 40, 65536) == 0);
  CHECK (journal_read (dir, "d0", &c) == JOURNAL_OK);
  CHECK (c.nr_names == 2 && strcmp (c.names[0], "a") == 0 &&
         strcmp (c.names[1], "b") == 0);
  CHECK (journal_contents_covers (&c, "b") &&
         !journal_contents_covers (&c, "c"));
  CHECK (c.nr_ranges == 3 && c.torn == 0 && !c.power);
  CHECK (c.ranges[0] == 0 && c.ranges[1] == 4096 &&
         c.ranges[2] == 1 << 20 && c.ranges[3] == 1 &&
         c.ranges[4] == UINT64_C (1) << 40 && c.ranges[5] == 65536);
  journal_contents_free (&c);

  /* A record torn by a crash: dropped, the rest kept. */
  size = file_size ();
  fd = open (path, O_WRONLY | O_APPEND);
  CHECK (fd >= 0 && write (fd, "torn", 4) == 4);
  close (fd);
  CHECK (journal_read (dir, "d0", &c) == JOURNAL_OK);
  CHECK (c.nr_ranges == 3 && c.torn == 4);
  journal_contents_free (&c);
  CHECK (truncate (path, size) == 0);

  /* A flipped bit in the middle record, then in the header. */
  poke (size - 24 - 10, 0x08);
  CHECK (journal_read (dir, "d0", &c) == JOURNAL_DAMAGED);
  CHECK (c.why && strcmp (c.why, "a damaged record") == 0);
  journal_contents_free (&c);
  poke (size - 24 - 10, 0x08);
  CHECK (journal_read (dir, "d0", &c) == JOURNAL_OK);
  journal_contents_free (&c);
  poke (14, 0x01);
  CHECK (journal_read (dir, "d0", &c) == JOURNAL_DAMAGED);
  CHECK (c.why && strcmp (c.why, "header checksum mismatch") == 0);
  journal_contents_free (&c);
  poke (0, 0x20);
  CHECK (journal_read (dir, "d0", &c) == JOURNAL_DAMAGED);
  CHECK (c.why && strstr (c.why, "magic") != NULL);
  journal_contents_free (&c);

  /* A fresh start replaces the damaged file; the old records go. */
  CHECK (journal_start (j, dir, "d0", names + 1, 1) == 0);
  CHECK (journal_covers (j, names + 1, 1) && !journal_covers (j, names, 2));
  CHECK (journal_append (j, 512, 512) == 0);
  CHECK (journal_read (dir, "d0", &c) == JOURNAL_OK);
  CHECK (c.nr_names == 1 && strcmp (c.names[0], "b") == 0 &&
         c.nr_ranges == 1 && c.ranges[0] == 512);
  journal_contents_free (&c);

  /* Broken (an append failed): the file goes, appends do nothing until
   * a fresh start.
   */
  CHECK (journal_break (j) == 1 && journal_broken (j));
  CHECK (journal_break (j) == 0);
  CHECK (journal_append (j, 0, 1) == 0);
  CHECK (journal_read (dir, "d0", &c) == JOURNAL_MISSING);
  journal_contents_free (&c);
  CHECK (journal_start (j, dir, "d0", names, 2) == 0 && !journal_broken (j));
  CHECK (journal_append (j, 0, 1) == 0);
  CHECK (journal_read (dir, "d0", &c) == JOURNAL_OK && c.nr_ranges == 1);
  journal_contents_free (&c);

  journal_free (j);
  CHECK (journal_remove (dir, "d0") == 0);
  CHECK (journal_read (dir, "d0", &c) == JOURNAL_MISSING);
  journal_contents_free (&c);
}

#define THREADS 8
#define PER_THREAD 300

static struct journal *shared;

static void *
appender (void *arg)
{
  uintptr_t t = (uintptr_t) arg;
  int i;

  for (i = 0; i < PER_THREAD; i++)
    if (journal_append (shared, t * PER_THREAD + i, t + 1) == -1)
      return (void *) 1;
  return NULL;
}

/* Every record of every thread is there once, whole. */
static void
test_group_commit (void)
{
  pthread_t th[THREADS];
  struct journal_contents c;
  static unsigned char seen[THREADS * PER_THREAD];
  uintptr_t t;
  void *ret;
  size_t i;
  bool ok = true;

  shared = journal_new (true);
  CHECK (shared && journal_start (shared, dir, "p0", NULL, 0) == 0);
  for (t = 0; t < THREADS; t++)
    CHECK (pthread_create (&th[t], NULL, appender, (void *) t) == 0);
  for (t = 0; t < THREADS; t++) {
    CHECK (pthread_join (th[t], &ret) == 0);
    CHECK (ret == NULL);
  }
  CHECK (journal_read (dir, "p0", &c) == JOURNAL_OK);
  CHECK (c.power && c.nr_names == 0);
  CHECK (c.nr_ranges == THREADS * PER_THREAD);
  for (i = 0; i < c.nr_ranges && ok; i++) {
    uint64_t off = c.ranges[2 * i], len = c.ranges[2 * i + 1];
    ok = off < THREADS * PER_THREAD && len == off / PER_THREAD + 1 &&
      !seen[off];
    if (ok)
      seen[off] = 1;
  }
  CHECK (ok);
  journal_contents_free (&c);
  journal_free (shared);
  CHECK (journal_remove (dir, "p0") == 0);
}

int
main (void)
{
  if (mkdtemp (dir) == NULL) {
    perror ("mkdtemp");
    return 1;
  }
  snprintf (path, sizeof path, "%s/journal.d0", dir);
  test_records ();
  test_group_commit ();
  rmdir (dir);
  printf ("test-journal: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
