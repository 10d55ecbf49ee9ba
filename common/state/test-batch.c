/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Unit tests of batch.c: commit, abort, a failed step, recovery of a
 * committed batch (built by hand, and left by a process killed with
 * SIGKILL at random instants, hundreds of times).
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "cleanup.h"
#include "test-check.h"
#include "state.h"
#include "state-private.h"
#include "buffer.h"
#include "batch.h"

#define KIND 0x54534554          /* any value will do */

static char top[] = "/tmp/test-batch-XXXXXX";

/* The payload of NAME as a number, -1 if missing, -2 if unreadable. */
static long
value_of (const char *name)
{
  CLEANUP_FREE void *data = NULL;
  size_t len;
  long v = 0;

  if (state_read (top, name, KIND, &data, &len) == -1)
    return errno == ENOENT ? -1 : -2;
  if (len != sizeof v)
    return -2;
  memcpy (&v, data, sizeof v);
  return v;
}

static int
put (struct state_batch *b, const char *name, long v)
{
  return state_batch_write (b, name, KIND, &v, sizeof v, STATE_NO_SYNC);
}

static int
count_entries (void)
{
  char **names;
  size_t n;

  if (state_list (top, NULL, &names, &n) == -1)
    return -1;
  state_list_free (names, n);
  return n;
}

static bool
no_dot_files (void)
{
  char cmd[256];

  snprintf (cmd, sizeof cmd, "test -z \"$(ls -A %s | grep '^\\.')\"", top);
  return system (cmd) == 0;
}

static void
test_commit_and_abort (void)
{
  struct state_batch *b;
  long one = 1;

  CHECK (state_write (top, "gone", KIND, &one, sizeof one) == 0);
  b = state_batch_new (top);
  CHECK (b && state_batch_empty (b));
  CHECK (put (b, "a", 1) == 0 && put (b, "b", 2) == 0);
  CHECK (put (b, "a", 3) == 0);         /* the later one wins */
  CHECK (state_batch_remove (b, "gone") == 0);
  CHECK (state_batch_remove (b, "never") == 0);
  /* Nothing is visible before the commit. */
  CHECK (value_of ("a") == -1 && value_of ("gone") == 1);
  CHECK (state_batch_commit (b) == 0);
  CHECK (value_of ("a") == 3 && value_of ("b") == 2 &&
         value_of ("gone") == -1);
  CHECK (value_of (STATE_BATCH_NAME) == -1 && no_dot_files ());

  b = state_batch_new (top);
  CHECK (put (b, "a", 10) == 0 && state_batch_remove (b, "b") == 0);
  state_batch_abort (b);
  CHECK (value_of ("a") == 3 && value_of ("b") == 2 && no_dot_files ());

  /* A staged file then removed in the same batch. */
  b = state_batch_new (top);
  CHECK (put (b, "c", 5) == 0 && state_batch_remove (b, "c") == 0);
  CHECK (state_batch_commit (b) == 0);
  CHECK (value_of ("c") == -1 && no_dot_files ());

  /* An empty batch commits nothing. */
  b = state_batch_new (top);
  CHECK (state_batch_commit (b) == 0 && count_entries () == 2);
}

static void
test_failures (void)
{
  struct state_batch *b = state_batch_new (top);
  const char *s;

  /* A bad name fails the batch, which then changes nothing. */
  CHECK (put (b, "a", 20) == 0);
  CHECK (put (b, "no/slash", 1) == -1 && errno == EINVAL);
  CHECK (put (b, "b", 21) == -1);
  CHECK (state_batch_commit (b) == -1);
  CHECK (value_of ("a") == 3 && value_of ("b") == 2 && no_dot_files ());
  b = state_batch_new (top);
  CHECK (state_batch_remove (b, STATE_BATCH_NAME) == -1 && errno == EINVAL);
  state_batch_abort (b);
  b = state_batch_new (top);
  CHECK (put (b, STATE_BATCH_NAME, 1) == -1 && errno == EINVAL);
  state_batch_abort (b);

  /* A file the caller writes itself. */
  b = state_batch_new (top);
  s = state_batch_stage (b, "j");
  CHECK (s && s[0] == '.');
  if (s) {
    long v = 7;
    CHECK (state_write_staged (top, s, KIND, &v, sizeof v, 0) == 0);
  }
  CHECK (value_of ("j") == -1);
  CHECK (state_batch_commit (b) == 0 && value_of ("j") == 7);
}

/* A committed record whose first step was applied before a crash. */
static void
test_recover_by_hand (void)
{
  struct state_buf rec = STATE_BUF_INIT;
  char staged[64];
  long v = 30;

  snprintf (staged, sizeof staged, STATE_STAGED_FORMAT, "b");
  CHECK (state_write_staged (top, staged, KIND, &v, sizeof v, 0) == 0);
  CHECK (state_write (top, "a", KIND, &v, sizeof v) == 0);   /* done */
  state_put_u32 (&rec, 3);
  state_put_u8 (&rec, 1);
  state_put_string (&rec, "a");
  state_put_u8 (&rec, 1);
  state_put_string (&rec, "b");
  state_put_u8 (&rec, 2);
  state_put_string (&rec, "j");
  CHECK (rec.err == 0);
  CHECK (state_write (top, STATE_BATCH_NAME, STATE_BATCH_KIND, rec.data,
                      rec.len) == 0);
  CHECK (state_batch_recover (top) == 1);
  CHECK (value_of ("a") == 30 && value_of ("b") == 30 &&
         value_of ("j") == -1 && value_of (STATE_BATCH_NAME) == -1);
  CHECK (state_batch_recover (top) == 0);

  /* A damaged record is no commit: it goes, the files stay. */
  CHECK (state_write (top, STATE_BATCH_NAME, STATE_BATCH_KIND, rec.data,
                      rec.len) == 0);
  {
    char path[128];
    int fd;
    snprintf (path, sizeof path, "%s/%s", top, STATE_BATCH_NAME);
    fd = open (path, O_WRONLY);
    CHECK (fd >= 0 && pwrite (fd, "X", 1, 70) == 1);
    close (fd);
  }
  CHECK (state_batch_recover (top) == -1 && errno == EBADMSG);
  CHECK (value_of (STATE_BATCH_NAME) == -1 && value_of ("a") == 30);
  state_buf_free (&rec);
}

/* Generation G of files f0..f5: f0-f4 hold G, f5 exists in odd ones. */
static void
write_generations (long g)
{
  char name[8];
  int i;

  for (;; g++) {
    struct state_batch *b = state_batch_new (top);
    for (i = 0; i < 5; i++) {
      snprintf (name, sizeof name, "f%d", i);
      put (b, name, g);
    }
    if (g & 1)
      put (b, "f5", g);
    else
      state_batch_remove (b, "f5");
    if (state_batch_commit (b) == -1)
      _exit (1);
  }
}

static void
test_kill_at_random (void)
{
  unsigned rounds, torn = 0, bad = 0;
  long g, last = -1;
  char name[8];
  int i;

  srand (time (NULL));
  for (rounds = 0; rounds < 300; rounds++) {
    pid_t pid = fork ();
    if (pid == 0)
      write_generations (last + 1);
    usleep (rand () % 3000);
    kill (pid, SIGKILL);
    waitpid (pid, NULL, 0);
    if (value_of (STATE_BATCH_NAME) != -1)
      torn++;                   /* killed between commit and done */
    if (state_batch_recover (top) == -1 && errno != EBADMSG)
      bad++;
    state_remove_temps (top);
    g = value_of ("f0");
    for (i = 1; i < 5; i++) {
      snprintf (name, sizeof name, "f%d", i);
      if (value_of (name) != g)
        bad++;
    }
    if (g >= 0 && value_of ("f5") != ((g & 1) ? g : -1))
      bad++;
    if (g < last)
      bad++;                    /* a committed generation went back */
    last = g;
  }
  printf ("test-batch: %u kills, %u with a batch committed but not yet "
          "applied, last generation %ld, %u mixtures\n", rounds, torn,
          last, bad);
  CHECK (bad == 0);
  CHECK (no_dot_files () && value_of (STATE_BATCH_NAME) == -1);
}

static int
remove_entry (const char *path, const struct stat *st, int flag,
              struct FTW *ftw)
{
  return remove (path);
}

int
main (void)
{
  if (mkdtemp (top) == NULL) {
    perror ("mkdtemp");
    exit (EXIT_FAILURE);
  }
  test_commit_and_abort ();
  test_failures ();
  test_recover_by_hand ();
  test_kill_at_random ();
  nftw (top, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  return test_report ();
}
