/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* bench-ckpt: checkpoints through the QMP monitor, timed as the QMP
 * client sees them (send to answer, round trip).
 *
 *   bench-ckpt setup QMP N
 *       create checkpoints p1..pN back to back (no writes in between);
 *       prints "setup n=N secs=S".
 *
 *   bench-ckpt fsync DIR COUNT
 *       the disk's floor under a state save: COUNT times { write a
 *       4 KiB temporary file, fsync, rename, fsync DIR }.
 *
 *   bench-ckpt scale NBD QMP PID N WRITES SEED [PROBE-DIR]  (N >= 50)
 *       the scale scenario: N times { WRITES random 4 KiB writes over
 *       the whole disk (16 in flight), then checkpoint-create c<i> };
 *       then, with N checkpoints present:
 *         20 x { WRITES writes, create x<j>, WRITES writes, delete x<j> }
 *             (create at N, and delete of the newest, which merges
 *             into c<N> and makes it record again);
 *         delete 20 checkpoints from the middle (each merges into its
 *             parent), and the 10 oldest (roots: nothing to merge into);
 *         query-checkpoints, and query-checkpoints size=true;
 *       reading VmRSS / VmHWM of PID (the nbdkit server) along the way;
 *       with PROBE-DIR, the fsync probe (below) runs there 20 times
 *       after the build: the disk's latency in the same state.
 *       Prints key=value lines (times in ms, memory in KiB).
 */
#include <config.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <libnbd.h>

#include "bench-common.h"

static char *wbuf;

static int
write_done (void *user_data, int *error)
{
  if (*error) {
    fprintf (stderr, "bench-ckpt: write failed: %s\n", strerror (*error));
    exit (1);
  }
  return 1;
}

/* COUNT random 4 KiB writes over the whole disk, 16 in flight. */
static void
scattered_writes (struct nbd_handle *h, uint64_t size, unsigned count)
{
  uint64_t blocks = size / 4096;
  unsigned submitted = 0;

  while (submitted < count || nbd_aio_in_flight (h) > 0) {
    while (submitted < count && nbd_aio_in_flight (h) < 16) {
      nbd_completion_callback cb = { .callback = write_done };
      if (nbd_aio_pwrite (h, wbuf, 4096, (rng_next () % blocks) * 4096,
                          cb, 0) == -1) {
        fprintf (stderr, "bench-ckpt: %s\n", nbd_get_error ());
        exit (1);
      }
      submitted++;
    }
    if (nbd_poll (h, -1) == -1) {
      fprintf (stderr, "bench-ckpt: %s\n", nbd_get_error ());
      exit (1);
    }
  }
}

/* Run CMD (must succeed); returns the round trip in ms. */
static double
timed (struct qmp *q, const char *cmd)
{
  uint64_t t0 = now_ns ();

  qmp_must (q, cmd);
  return (now_ns () - t0) / 1e6;
}

static double
create (struct qmp *q, const char *name)
{
  char cmd[256];

  snprintf (cmd, sizeof cmd, "{\"execute\":\"checkpoint-create\","
            "\"arguments\":{\"name\":\"%s\"}}", name);
  return timed (q, cmd);
}

static double
delete (struct qmp *q, const char *name)
{
  char cmd[256];

  snprintf (cmd, sizeof cmd, "{\"execute\":\"checkpoint-delete\","
            "\"arguments\":{\"name\":\"%s\"}}", name);
  return timed (q, cmd);
}

/* One line of statistics over V[0..N) (reordered). */
static void
report (const char *what, double *v, size_t n)
{
  double mx = stat_quantile (v, n, 1.0);

  printf ("%s n=%zu min_ms=%.3f median_ms=%.3f p90_ms=%.3f p99_ms=%.3f "
          "max_ms=%.3f\n", what, n, stat_quantile (v, n, 0.0),
          stat_quantile (v, n, 0.5), stat_quantile (v, n, 0.9),
          stat_quantile (v, n, 0.99), mx);
}

static void
report_rss (const char *when, int pid)
{
  uint64_t rss, hwm;

  proc_rss (pid, &rss, &hwm);
  printf ("rss when=%s rss_kib=%" PRIu64 " hwm_kib=%" PRIu64 "\n",
          when, rss, hwm);
  fflush (stdout);
}

static int
setup (int argc, char *argv[])
{
  struct qmp *q;
  unsigned n, i;
  uint64_t t0;
  char name[32];

  if (argc != 4) {
    fprintf (stderr, "usage: bench-ckpt setup QMP N\n");
    return 2;
  }
  q = qmp_connect (argv[2]);
  n = atoi (argv[3]);
  t0 = now_ns ();
  for (i = 1; i <= n; i++) {
    snprintf (name, sizeof name, "p%u", i);
    create (q, name);
  }
  printf ("setup n=%u secs=%.3f\n", n, (now_ns () - t0) / 1e9);
  qmp_close (q);
  return 0;
}

/* The floor under a state save: what common/state does for one file
 * (write a temporary, fsync it, rename it, fsync the directory), N
 * times in DIR; prints a statistics line named WHAT.
 */
static int
fsync_probe (const char *what, const char *dir, unsigned n)
{
  unsigned i;
  double *v;
  char tmp[4096], dst[4096], block[4096] = { 1 };
  int fd, dfd;

  v = malloc ((n ? n : 1) * sizeof *v);
  snprintf (tmp, sizeof tmp, "%s/.probe.tmp", dir);
  snprintf (dst, sizeof dst, "%s/probe", dir);
  dfd = open (dir, O_RDONLY | O_DIRECTORY);
  if (v == NULL || dfd == -1) {
    perror (dir);
    return -1;
  }
  for (i = 0; i < n; i++) {
    uint64_t t0 = now_ns ();
    fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd == -1 || write (fd, block, sizeof block) != sizeof block ||
        fsync (fd) == -1 || close (fd) == -1 || rename (tmp, dst) == -1 ||
        fsync (dfd) == -1) {
      perror ("fsync probe");
      return -1;
    }
    v[i] = (now_ns () - t0) / 1e6;
  }
  unlink (dst);
  close (dfd);
  report (what, v, n);
  free (v);
  return 0;
}

#define ROUNDS 20
#define ROOT_DELETES 10

static int
scale (int argc, char *argv[])
{
  struct nbd_handle *h;
  struct qmp *q;
  unsigned n, writes, i;
  int pid;
  int64_t size;
  double *t, v[ROUNDS], w[ROUNDS];
  char name[32];
  uint64_t t0;

  if (argc != 8 && argc != 9) {
    fprintf (stderr, "usage: bench-ckpt scale NBD QMP PID N WRITES SEED "
             "[PROBE-DIR]\n");
    return 2;
  }
  h = bench_nbd_connect (argv[2]);
  if (h == NULL)
    return 1;
  q = qmp_connect (argv[3]);
  pid = atoi (argv[4]);
  n = atoi (argv[5]);
  writes = atoi (argv[6]);
  rng_seed (strtoull (argv[7], NULL, 0));
  if (n < 50) {
    fprintf (stderr, "bench-ckpt: N must be at least 50\n");
    return 2;
  }
  if ((size = nbd_get_size (h)) < 4096) {
    fprintf (stderr, "bench-ckpt: disk too small\n");
    return 1;
  }
  wbuf = malloc (4096);
  t = malloc (n * sizeof *t);
  if (wbuf == NULL || t == NULL) {
    perror ("malloc");
    return 1;
  }
  for (i = 0; i < 4096; i++)
    wbuf[i] = rng_next ();
  printf ("disk size=%" PRIi64 " checkpoints=%u writes_between=%u\n",
          size, n, writes);
  report_rss ("start", pid);

  t0 = now_ns ();
  for (i = 0; i < n; i++) {
    scattered_writes (h, size, writes);
    snprintf (name, sizeof name, "c%u", i + 1);
    t[i] = create (q, name);
  }
  printf ("build secs=%.3f\n", (now_ns () - t0) / 1e9);
  /* First and last 100 before the whole set is reordered. */
  report ("create_first100", t, n < 100 ? n : 100);
  report ("create_last100", t + (n > 100 ? n - 100 : 0), n < 100 ? n : 100);
  report ("create_all", t, n);
  scattered_writes (h, size, writes);
  report_rss ("after_build", pid);
  /* The disk's fsync latency now, with the writes above in its cache. */
  if (argc == 9 && fsync_probe ("fsync_probe_after_build", argv[8], 20) == -1)
    return 1;

  for (i = 0; i < ROUNDS; i++) {
    snprintf (name, sizeof name, "x%u", i);
    scattered_writes (h, size, writes);
    v[i] = create (q, name);
    scattered_writes (h, size, writes);
    w[i] = delete (q, name);
  }
  report ("create_at_n", v, ROUNDS);
  report ("delete_newest", w, ROUNDS);

  for (i = 0; i < ROUNDS; i++) {
    /* Spread over the middle half: c<N/4> .. c<3N/4>. */
    snprintf (name, sizeof name, "c%u", n / 4 + i * (n / 2) / ROUNDS);
    v[i] = delete (q, name);
  }
  report ("delete_middle", v, ROUNDS);
  for (i = 0; i < ROOT_DELETES; i++) {
    snprintf (name, sizeof name, "c%u", i + 1);
    v[i] = delete (q, name);
  }
  report ("delete_oldest", v, ROOT_DELETES);

  v[0] = timed (q, "{\"execute\":\"query-checkpoints\"}");
  printf ("query_checkpoints ms=%.3f\n", v[0]);
  fflush (stdout);
  v[0] = timed (q, "{\"execute\":\"query-checkpoints\","
                "\"arguments\":{\"size\":true}}");
  printf ("query_checkpoints_size ms=%.3f\n", v[0]);
  report_rss ("end", pid);

  qmp_close (q);
  nbd_shutdown (h, 0);
  nbd_close (h);
  free (t);
  free (wbuf);
  return 0;
}

int
main (int argc, char *argv[])
{
  if (argc == 4 && strcmp (argv[1], "fsync") == 0)
    return fsync_probe ("fsync_probe", argv[2], atoi (argv[3])) ? 1 : 0;
  if (argc >= 2 && strcmp (argv[1], "setup") == 0)
    return setup (argc, argv);
  if (argc >= 2 && strcmp (argv[1], "scale") == 0)
    return scale (argc, argv);
  fprintf (stderr, "usage: bench-ckpt setup QMP N\n"
           "       bench-ckpt fsync DIR COUNT\n"
           "       bench-ckpt scale NBD QMP PID N WRITES SEED [PROBE-DIR]\n");
  return 2;
}
