/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* bench-latency: one pass of writes over a region, each request timed.
 *
 *   bench-latency SOCKET|URI rand4k|seq1m REGION GRAN QD SEED [PID]
 *
 * rand4k: one 4 KiB write in each GRAN-sized chunk of [0, REGION), at
 * a random 4 KiB-aligned place in it, the chunks in a random order
 * (SEED); seq1m: 1 MiB writes walking [0, REGION) in order.  Either
 * way every chunk is written once: run after a recording bitmap was
 * cleared, every write is a first touch (it dirties clean chunks); run
 * again with the same SEED, every write goes to dirty chunks (a repeat
 * write).  QD requests stay in flight; a request's latency is from its
 * nbd_aio_pwrite to its completion callback.  With PID (the server's),
 * also the CPU time the server spent per request (less disturbed by
 * other load on the machine than the rest).
 *
 * Prints one line:
 *   mode=rand4k ops=N secs=S mibps=X iops=Y p50_us=A p99_us=B max_us=C
 *     [srv_us_per_op=U]
 * and exits 1 on any error.
 */
#include <config.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "bench-common.h"

struct req {
  uint64_t sent_ns;
  double *lat_us;               /* where its latency goes */
};

static int failed;

static int
write_done (void *user_data, int *error)
{
  struct req *r = user_data;

  if (*error) {
    fprintf (stderr, "bench-latency: write failed: %s\n", strerror (*error));
    failed = 1;
  }
  *r->lat_us = (now_ns () - r->sent_ns) / 1000.0;
  free (r);
  return 1;
}

/* The offsets of one pass, in order. */
static uint64_t *
offsets (int random_mode, uint64_t region, uint64_t gran, uint32_t len,
         size_t *n)
{
  size_t i, k;
  uint64_t *v, t;

  *n = random_mode ? region / gran : region / len;
  v = malloc (*n * sizeof *v);
  if (v == NULL) {
    perror ("malloc");
    exit (1);
  }
  for (i = 0; i < *n; i++)
    v[i] = random_mode ? i * gran + (rng_next () % (gran / len)) * len
      : i * len;
  if (random_mode)
    for (i = *n - 1; i > 0; i--) {    /* Fisher-Yates */
      k = rng_next () % (i + 1);
      t = v[i];
      v[i] = v[k];
      v[k] = t;
    }
  return v;
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  uint64_t region, gran, start, secs_ns, *off;
  unsigned qd;
  uint32_t len;
  int random_mode;
  double *lat;
  size_t n, next = 0, i;
  char *buf;
  int pid = argc > 7 ? atoi (argv[7]) : 0;
  double cpu0 = -1, cpu1 = -1;

  if (argc != 7 && argc != 8) {
    fprintf (stderr, "usage: bench-latency SOCKET|URI rand4k|seq1m REGION "
             "GRAN QD SEED [PID]\n");
    exit (2);
  }
  random_mode = strcmp (argv[2], "rand4k") == 0;
  if (!random_mode && strcmp (argv[2], "seq1m") != 0) {
    fprintf (stderr, "bench-latency: unknown mode %s\n", argv[2]);
    exit (2);
  }
  len = random_mode ? 4096 : 1024 * 1024;
  if (parse_size (argv[3], &region) == -1 ||
      parse_size (argv[4], &gran) == -1 || gran < 4096 ||
      (gran & (gran - 1)) || region < len || region % gran ||
      region % len) {
    fprintf (stderr, "bench-latency: bad REGION %s or GRAN %s\n", argv[3],
             argv[4]);
    exit (2);
  }
  qd = atoi (argv[5]);
  if (qd < 1 || qd > 1024) {
    fprintf (stderr, "bench-latency: QD must be 1 to 1024\n");
    exit (2);
  }
  rng_seed (strtoull (argv[6], NULL, 0));
  off = offsets (random_mode, region, gran, len, &n);
  lat = calloc (n, sizeof *lat);
  buf = malloc (len);
  if (lat == NULL || buf == NULL) {
    perror ("malloc");
    exit (1);
  }
  for (i = 0; i < len; i += 8) {
    uint64_t v = rng_next ();
    memcpy (buf + i, &v, 8);
  }
  h = bench_nbd_connect (argv[1]);
  if (h == NULL)
    exit (1);
  if (nbd_get_size (h) < (int64_t) region) {
    fprintf (stderr, "bench-latency: the disk is smaller than REGION\n");
    exit (1);
  }

  if (pid > 0)
    cpu0 = proc_cpu_ms (pid);
  start = now_ns ();
  while (next < n || nbd_aio_in_flight (h) > 0) {
    while (next < n && nbd_aio_in_flight (h) < (int) qd) {
      struct req *r = malloc (sizeof *r);
      if (r == NULL) {
        perror ("malloc");
        exit (1);
      }
      r->lat_us = &lat[next];
      r->sent_ns = now_ns ();
      nbd_completion_callback cb = { .callback = write_done, .user_data = r };
      if (nbd_aio_pwrite (h, buf, len, off[next], cb, 0) == -1) {
        fprintf (stderr, "bench-latency: %s\n", nbd_get_error ());
        exit (1);
      }
      next++;
    }
    if (nbd_poll (h, -1) == -1) {
      fprintf (stderr, "bench-latency: %s\n", nbd_get_error ());
      exit (1);
    }
  }
  secs_ns = now_ns () - start;
  if (pid > 0)
    cpu1 = proc_cpu_ms (pid);
  if (failed)
    exit (1);
  printf ("mode=%s ops=%zu secs=%.3f mibps=%.2f iops=%.0f p50_us=%.1f "
          "p99_us=%.1f max_us=%.1f", argv[2], n, secs_ns / 1e9,
          (double) n * len / (secs_ns / 1e9) / (1024.0 * 1024.0),
          n / (secs_ns / 1e9), stat_quantile (lat, n, 0.5),
          stat_quantile (lat, n, 0.99), stat_quantile (lat, n, 1.0));
  if (cpu0 >= 0 && cpu1 >= 0)
    printf (" srv_us_per_op=%.2f", (cpu1 - cpu0) * 1000.0 / n);
  printf ("\n");
  if (nbd_shutdown (h, 0) == -1)
    fprintf (stderr, "bench-latency: shutdown: %s\n", nbd_get_error ());
  nbd_close (h);
  free (off);
  free (lat);
  free (buf);
  return 0;
}
