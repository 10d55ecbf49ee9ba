/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* bench-cbw: the client side of bench-backup.sh (copy-before-write and
 * incremental-read benchmarks).  Self-contained: built by the script
 * with  cc -O2 bench-cbw.c $(pkg-config --cflags --libs libnbd).
 *
 *   bench-cbw write URI MODE REGION COUNT QD SEED
 *     First-touch writes: no two writes touch the same block.
 *     MODE rand4k: COUNT 4 KiB writes, each in a different 64 KiB
 *       cluster of [0, REGION) (clusters in a random permutation,
 *       a random 4 KiB block inside each), so every write is the
 *       first touch both for a 4 KiB-block CBW and for a 64 KiB-cluster
 *       CBW (qemu's copy-before-write).  COUNT <= REGION / 64 KiB.
 *     MODE seq1m: COUNT 1 MiB writes walking [0, COUNT MiB) in order.
 *     MODE chunks64k: COUNT 64 KiB writes to distinct random 64 KiB
 *       chunks (used to dirty a fraction of the disk).
 *     QD requests in flight (nbd_aio_pwrite).  Then one flush, timed
 *     apart.  Prints:
 *       mode=M ops=N bytes=N secs=S mibps=X iops=Y flush_secs=F
 *
 *   bench-cbw pread URI MODE REGION COUNT QD SEED
 *     The same offsets and sizes, read instead of written: the floor
 *     of the reads that a copy-before-write adds (e.g. cold cache).
 *
 *   bench-cbw read URI REQSIZE QD [READ-URI]
 *     Block status (base:allocation) over the whole export, then pread
 *     of every extent without HOLE, in requests of at most REQSIZE
 *     bytes, QD in flight.  HOLE|ZERO extents are counted, not read;
 *     HOLE-only extents (unchanged, in an incremental backup export)
 *     are skipped.  Prints:
 *       data_bytes=N zero_bytes=N skip_bytes=N extents=N reqs=N
 *       bs_secs=S read_secs=S secs=S mibps=X
 *     (mibps = data bytes read / total time including block status).
 *     With READ-URI (an export of the same size), the extents come from
 *     URI's block status and are read from READ-URI: the same I/O
 *     pattern on another server.
 *
 * Exits 1 on any error (a failed request is an error).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

static uint64_t rng_state = 1;

static uint64_t
rng_next (void)                 /* splitmix64 */
{
  uint64_t z = (rng_state += UINT64_C (0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C (0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C (0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static double
now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
die_nbd (const char *what)
{
  fprintf (stderr, "bench-cbw: %s: %s\n", what, nbd_get_error ());
  exit (1);
}

static uint64_t
parse_size (const char *s)
{
  char *end;
  uint64_t v = strtoull (s, &end, 10);
  switch (*end) {
  case 'k': case 'K': v <<= 10; break;
  case 'm': case 'M': v <<= 20; break;
  case 'g': case 'G': v <<= 30; break;
  case '\0': break;
  default: fprintf (stderr, "bench-cbw: bad size %s\n", s); exit (2);
  }
  return v;
}

static struct nbd_handle *
connect_uri (const char *uri)
{
  struct nbd_handle *h = nbd_create ();
  if (h == NULL)
    die_nbd ("nbd_create");
  if (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1)
    die_nbd ("nbd_add_meta_context");
  if (nbd_connect_uri (h, uri) == -1)
    die_nbd (uri);
  return h;
}

static bool failed;
static uint64_t done_ops;

static int
req_done (void *user_data, int *error)
{
  if (*error) {
    fprintf (stderr, "bench-cbw: request failed: %s\n", strerror (*error));
    failed = true;
  }
  else
    done_ops++;
  return 1;
}

/* Keep at most QD in flight; returns when below QD. */
static void
wait_below (struct nbd_handle *h, unsigned qd)
{
  while (nbd_aio_in_flight (h) >= (int) qd)
    if (nbd_poll (h, -1) == -1)
      die_nbd ("nbd_poll");
  if (failed)
    exit (1);
}

static void
drain (struct nbd_handle *h)
{
  while (nbd_aio_in_flight (h) > 0)
    if (nbd_poll (h, -1) == -1)
      die_nbd ("nbd_poll");
  if (failed)
    exit (1);
}

static int
do_write (int argc, char **argv)
{
  const char *uri = argv[2], *mode = argv[3];
  uint64_t region = parse_size (argv[4]), count = strtoull (argv[5], NULL, 10);
  unsigned qd = atoi (argv[6]);
  uint32_t len;
  uint64_t *offs, i, n;
  char *buf;
  struct nbd_handle *h;
  double t0, t1, t2;
  bool is_read = strcmp (argv[1], "pread") == 0;

  rng_state = strtoull (argv[7], NULL, 0);
  if (strcmp (mode, "rand4k") == 0) {
    len = 4096;
    n = region / 65536;
  }
  else if (strcmp (mode, "chunks64k") == 0) {
    len = 65536;
    n = region / 65536;
  }
  else if (strcmp (mode, "seq1m") == 0) {
    len = 1 << 20;
    n = region / len;
  }
  else {
    fprintf (stderr, "bench-cbw: unknown mode %s\n", mode);
    exit (2);
  }
  if (count > n || count == 0 || qd < 1) {
    fprintf (stderr, "bench-cbw: COUNT must be 1..%" PRIu64 "\n", n);
    exit (2);
  }
  offs = malloc (n * sizeof *offs);
  for (i = 0; i < n; i++)
    offs[i] = i;
  if (len != 1 << 20) {
    /* Fisher-Yates permutation of the clusters. */
    for (i = n - 1; i > 0; i--) {
      uint64_t j = rng_next () % (i + 1), t = offs[i];
      offs[i] = offs[j];
      offs[j] = t;
    }
  }
  for (i = 0; i < count; i++) {
    if (len == 4096)
      offs[i] = offs[i] * 65536 + (rng_next () % 16) * 4096;
    else
      offs[i] *= len;
  }

  buf = malloc (len);
  for (i = 0; i < len; i += 8) {
    uint64_t v = rng_next ();
    memcpy (buf + i, &v, 8);
  }
  h = connect_uri (uri);
  if (nbd_get_size (h) < (int64_t) region) {
    fprintf (stderr, "bench-cbw: export smaller than REGION\n");
    exit (1);
  }

  t0 = now ();
  for (i = 0; i < count; i++) {
    nbd_completion_callback cb = { .callback = req_done };
    wait_below (h, qd);
    if (is_read) {
      /* Reads only measure the latency of the same blocks: they may
       * share one buffer, its contents do not matter.
       */
      if (nbd_aio_pread (h, buf, len, offs[i], cb, 0) == -1)
        die_nbd ("nbd_aio_pread");
    }
    else if (nbd_aio_pwrite (h, buf, len, offs[i], cb, 0) == -1)
      die_nbd ("nbd_aio_pwrite");
  }
  drain (h);
  t1 = now ();
  if (nbd_flush (h, 0) == -1)
    die_nbd ("nbd_flush");
  t2 = now ();
  printf ("%smode=%s ops=%" PRIu64 " bytes=%" PRIu64 " secs=%.4f mibps=%.2f "
          "iops=%.0f flush_secs=%.4f\n",
          is_read ? "read " : "", mode, done_ops, done_ops * len, t1 - t0,
          done_ops * len / (t1 - t0) / 1048576.0, done_ops / (t1 - t0),
          t2 - t1);
  nbd_shutdown (h, 0);
  nbd_close (h);
  free (buf);
  free (offs);
  return 0;
}

struct ext { uint64_t off, len; uint32_t flags; };
static struct ext *exts;
static size_t nr_exts, cap_exts;
static uint64_t bs_pos;

static int
extent_cb (void *user_data, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t nr_entries, int *error)
{
  size_t i;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  if (*error) {
    fprintf (stderr, "bench-cbw: block status error %d\n", *error);
    failed = true;
    return 0;
  }
  bs_pos = offset;
  for (i = 0; i + 1 < nr_entries; i += 2) {
    uint32_t f = entries[i + 1] & (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO);
    if (nr_exts > 0 && exts[nr_exts - 1].flags == f &&
        exts[nr_exts - 1].off + exts[nr_exts - 1].len == bs_pos)
      exts[nr_exts - 1].len += entries[i];
    else {
      if (nr_exts == cap_exts) {
        cap_exts = cap_exts ? 2 * cap_exts : 1024;
        exts = realloc (exts, cap_exts * sizeof *exts);
      }
      exts[nr_exts++] = (struct ext) { bs_pos, entries[i], f };
    }
    bs_pos += entries[i];
  }
  return 0;
}

static unsigned *free_slots, nr_free;

static int
read_done (void *user_data, int *error)
{
  if (*error) {
    fprintf (stderr, "bench-cbw: read failed: %s\n", strerror (*error));
    failed = true;
  }
  free_slots[nr_free++] = (unsigned) (uintptr_t) user_data;
  return 1;
}

static int
do_read (int argc, char **argv)
{
  const char *uri = argv[2];
  uint64_t reqsize = parse_size (argv[3]);
  unsigned qd = atoi (argv[4]);
  struct nbd_handle *h = connect_uri (uri), *rh = h;
  int64_t size = nbd_get_size (h);
  uint64_t pos = 0, data = 0, zero = 0, skip = 0, reqs = 0, nr_data = 0;
  double t0, t1, t2;
  char *buf;
  size_t i;

  if (size == -1)
    die_nbd ("nbd_get_size");
  if (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1) {
    fprintf (stderr, "bench-cbw: no base:allocation\n");
    exit (1);
  }
  buf = malloc ((size_t) qd * reqsize);
  if (argc == 6) {
    rh = connect_uri (argv[5]);
    if (nbd_get_size (rh) != size) {
      fprintf (stderr, "bench-cbw: %s: a different size\n", argv[5]);
      exit (1);
    }
  }

  t0 = now ();
  while (pos < (uint64_t) size) {
    uint64_t len = (uint64_t) size - pos;
    nbd_extent_callback cb = { .callback = extent_cb };
    if (len > 0x80000000ULL)
      len = 0x80000000ULL;
    bs_pos = pos;
    if (nbd_block_status (h, len, pos, cb, 0) == -1)
      die_nbd ("nbd_block_status");
    if (failed)
      exit (1);
    if (bs_pos <= pos) {
      fprintf (stderr, "bench-cbw: block status made no progress\n");
      exit (1);
    }
    pos = bs_pos;
  }
  t1 = now ();

  /* Reads: QD buffers; a completion frees its slot. */
  {
    free_slots = malloc (qd * sizeof *free_slots);
    for (unsigned s = 0; s < qd; s++)
      free_slots[nr_free++] = s;
    for (i = 0; i < nr_exts; i++) {
      uint64_t off = exts[i].off, end = exts[i].off + exts[i].len;
      if (exts[i].flags & LIBNBD_STATE_HOLE) {
        if (exts[i].flags & LIBNBD_STATE_ZERO)
          zero += exts[i].len;
        else
          skip += exts[i].len;
        continue;
      }
      nr_data++;
      while (off < end) {
        uint64_t n = end - off < reqsize ? end - off : reqsize;
        unsigned s;
        while (nr_free == 0)
          if (nbd_poll (rh, -1) == -1)
            die_nbd ("nbd_poll");
        if (failed)
          exit (1);
        s = free_slots[--nr_free];
        nbd_completion_callback cb = { .callback = read_done,
                                       .user_data = (void *) (uintptr_t) s };
        if (nbd_aio_pread (rh, buf + (size_t) s * reqsize, n, off, cb, 0) == -1)
          die_nbd ("nbd_aio_pread");
        data += n;
        reqs++;
        off += n;
      }
    }
    drain (rh);
  }
  t2 = now ();
  printf ("data_bytes=%" PRIu64 " zero_bytes=%" PRIu64 " skip_bytes=%" PRIu64
          " extents=%" PRIu64 " reqs=%" PRIu64 " bs_secs=%.4f read_secs=%.4f"
          " secs=%.4f mibps=%.2f\n",
          data, zero, skip, nr_data, reqs, t1 - t0, t2 - t1, t2 - t0,
          data / (t2 - t0) / 1048576.0);
  if (rh != h) {
    nbd_shutdown (rh, 0);
    nbd_close (rh);
  }
  nbd_shutdown (h, 0);
  nbd_close (h);
  free (buf);
  return 0;
}

int
main (int argc, char **argv)
{
  if (argc == 8 && (strcmp (argv[1], "write") == 0 ||
                    strcmp (argv[1], "pread") == 0))
    return do_write (argc, argv);
  if ((argc == 5 || argc == 6) && strcmp (argv[1], "read") == 0)
    return do_read (argc, argv);
  fprintf (stderr,
           "usage: bench-cbw write|pread URI rand4k|seq1m|chunks64k REGION COUNT QD SEED\n"
           "       bench-cbw read URI REQSIZE QD [READ-URI]\n");
  exit (2);
}
