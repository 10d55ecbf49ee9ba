/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* bench-write: write load against an NBD server through libnbd.
 *
 *   bench-write SOCKET|URI MODE REGION SECONDS [QD [SEED [PID]]]
 *
 * SOCKET is a Unix socket path (or an nbd:// / nbd+unix:// URI).
 * MODE:
 *   rand4k  4 KiB writes at random 4 KiB-aligned offsets of
 *           [0, REGION), from a fixed-seed generator;
 *   seq1m   1 MiB writes walking [0, REGION) in order, wrapping;
 *   fill    one sequential 1 MiB pass over [0, REGION) (SECONDS
 *           ignored): preconditioning before a measurement.
 * REGION is in bytes (suffixes K, M, G, T).  QD requests are kept in
 * flight (default 16) with nbd_aio_pwrite; the load runs for SECONDS
 * (a decimal) of wall time, counting only requests that completed.
 *
 * With PID (the server's), also the CPU time (user + system, all its
 * threads) that the server spent during the load, per request: a cost
 * figure that competing load on the machine disturbs less than
 * throughput does (resolution: one clock tick, usually 10 ms).
 *
 * Prints one line:
 *   mode=rand4k ops=N bytes=N secs=S mibps=X iops=Y [srv_cpu_ms=C srv_us_per_op=U]
 * and exits 1 on any error (a failed write is an error).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "bench-common.h"

static uint64_t completed_ops, completed_bytes;
static bool failed;

static int
write_done (void *user_data, int *error)
{
  uint32_t len = (uint32_t) (uintptr_t) user_data;

  if (*error) {
    fprintf (stderr, "bench-write: write failed: %s\n", strerror (*error));
    failed = true;
  }
  else {
    completed_ops++;
    completed_bytes += len;
  }
  return 1;                     /* retire the command */
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  const char *target, *mode;
  uint64_t region, size, next_seq = 0, end_ns, start_ns, now;
  double secs;
  unsigned qd = 16;
  uint64_t seed = 1;
  uint32_t len;
  bool fill, random_mode;
  char *buf;
  int64_t r;

  int pid = 0;
  double cpu0 = -1, cpu1 = -1;

  if (argc < 5 || argc > 8) {
    fprintf (stderr, "usage: bench-write SOCKET|URI rand4k|seq1m|fill "
             "REGION SECONDS [QD [SEED [PID]]]\n");
    exit (2);
  }
  target = argv[1];
  mode = argv[2];
  if (parse_size (argv[3], &region) == -1 || region == 0) {
    fprintf (stderr, "bench-write: bad REGION %s\n", argv[3]);
    exit (2);
  }
  secs = strtod (argv[4], NULL);
  if (argc > 5)
    qd = atoi (argv[5]);
  if (argc > 6)
    seed = strtoull (argv[6], NULL, 0);
  if (argc > 7)
    pid = atoi (argv[7]);
  if (qd < 1 || qd > 1024) {
    fprintf (stderr, "bench-write: QD must be 1 to 1024\n");
    exit (2);
  }
  random_mode = strcmp (mode, "rand4k") == 0;
  fill = strcmp (mode, "fill") == 0;
  if (!random_mode && !fill && strcmp (mode, "seq1m") != 0) {
    fprintf (stderr, "bench-write: unknown MODE %s\n", mode);
    exit (2);
  }
  len = random_mode ? 4096 : 1024 * 1024;
  if (region < len) {
    fprintf (stderr, "bench-write: REGION smaller than one request\n");
    exit (2);
  }
  rng_seed (seed);

  /* Non-zero, incompressible-looking data; libnbd only reads it, so
   * every request can share one buffer.
   */
  buf = malloc (len);
  if (buf == NULL) {
    perror ("malloc");
    exit (1);
  }
  for (size_t i = 0; i < len; i += 8) {
    uint64_t v = rng_next ();
    memcpy (buf + i, &v, 8);
  }

  h = bench_nbd_connect (target);
  if (h == NULL)
    exit (1);
  if ((r = nbd_get_size (h)) == -1) {
    fprintf (stderr, "bench-write: %s\n", nbd_get_error ());
    exit (1);
  }
  size = r;
  if (region > size)
    region = size;
  region -= region % len;

  if (pid > 0)
    cpu0 = proc_cpu_ms (pid);
  start_ns = now_ns ();
  end_ns = start_ns + (uint64_t) (secs * 1e9);
  for (;;) {
    now = now_ns ();
    if (failed)
      break;
    /* Submit until QD are in flight, unless time (or the fill) is up. */
    while (nbd_aio_in_flight (h) < (int) qd &&
           (fill ? next_seq < region : now < end_ns)) {
      uint64_t off;
      nbd_completion_callback cb = {
        .callback = write_done,
        .user_data = (void *) (uintptr_t) len,
      };
      if (random_mode)
        off = (rng_next () % (region / len)) * len;
      else {
        if (next_seq >= region)
          next_seq = 0;
        off = next_seq;
        next_seq += len;
      }
      if (nbd_aio_pwrite (h, buf, len, off, cb, 0) == -1) {
        fprintf (stderr, "bench-write: %s\n", nbd_get_error ());
        exit (1);
      }
    }
    if (nbd_aio_in_flight (h) == 0)
      break;
    if (nbd_poll (h, -1) == -1) {
      fprintf (stderr, "bench-write: %s\n", nbd_get_error ());
      exit (1);
    }
  }
  now = now_ns ();
  if (pid > 0)
    cpu1 = proc_cpu_ms (pid);
  if (failed)
    exit (1);
  secs = (now - start_ns) / 1e9;
  printf ("mode=%s ops=%" PRIu64 " bytes=%" PRIu64 " secs=%.3f "
          "mibps=%.2f iops=%.0f",
          mode, completed_ops, completed_bytes, secs,
          completed_bytes / secs / (1024.0 * 1024.0),
          completed_ops / secs);
  if (cpu0 >= 0 && cpu1 >= 0 && completed_ops > 0)
    printf (" srv_cpu_ms=%.0f srv_us_per_op=%.3f", cpu1 - cpu0,
            (cpu1 - cpu0) * 1000.0 / completed_ops);
  printf ("\n");
  if (nbd_shutdown (h, 0) == -1)
    fprintf (stderr, "bench-write: shutdown: %s\n", nbd_get_error ());
  nbd_close (h);
  free (buf);
  return 0;
}
