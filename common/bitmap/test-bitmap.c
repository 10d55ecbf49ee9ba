/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Unit tests of the dirty bitmap.  Exits 0 when every test passes.
 *
 * TEST_BITMAP_QUICK=1 in the environment shrinks the randomized and
 * multi-threaded tests (for valgrind).  TEST_BITMAP_SEED=N changes the
 * random seed.
 */
#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>
#include <unistd.h>
#include <sys/mman.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

#include "bitmap.h"
#include "cleanup.h"
#include "rounding.h"

#define KiB (UINT64_C (1) << 10)
#define MiB (UINT64_C (1) << 20)
#define GiB (UINT64_C (1) << 30)
#define TiB (UINT64_C (1) << 40)

/* Chunks in one page of the bitmap (4 KiB of bits): ranges around
 * multiples of this exercise page edges.
 */
#define PAGE_CHUNKS (UINT64_C (4096) * 8)

/* SHA-256 of 128 zero bytes: QEMU 7.2's hash of the clean bitmap of a
 * 64 MiB disk at 64 KiB granularity.
 */
#define SHA256_CLEAN_64M \
  "38723a2e5e8a17aa7950dc008209944e898f69a7bd10a23c839d341e935fd5ca"
#define SHA256_EMPTY \
  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      fprintf (stderr, "test-bitmap: %s:%d: %s: check failed: %s\n",   \
               __FILE__, __LINE__, __func__, #cond);                    \
      return -1;                                                        \
    }                                                                   \
  } while (0)

/* Propagate the failure of a helper that already said why. */
#define TRY(expr) CHECK ((expr) == 0)

static void
cleanup_bitmap (struct bitmap **bmp)
{
  bitmap_free (*bmp);
}
#define CLEANUP_BITMAP __attribute__ ((cleanup (cleanup_bitmap)))

static bool quick;
static uint64_t seed = 0x5eed1234abcd9876;

/* xorshift64*: small, fast, and the same on every platform. */
static uint64_t
rnd (uint64_t *s)
{
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * UINT64_C (0x2545F4914F6CDD1D);
}

static uint64_t
rand_below (uint64_t *s, uint64_t n)
{
  return n ? rnd (s) % n : 0;
}

/* The naive reference: one byte per chunk. */
struct ref {
  uint64_t size;
  uint64_t gran;
  uint64_t nr;
  uint64_t count;               /* dirty chunks, kept as we go */
  unsigned char *d;
};

static uint64_t
ref_nr_chunks (uint64_t size, uint64_t gran)
{
  return size / gran + (size % gran != 0);
}

static int
ref_init (struct ref *r, uint64_t size, uint64_t gran)
{
  r->size = size;
  r->gran = gran;
  r->nr = ref_nr_chunks (size, gran);
  r->count = 0;
  r->d = calloc (r->nr + 1, 1);
  CHECK (r->d != NULL);
  return 0;
}

static void
ref_free (struct ref *r)
{
  free (r->d);
  r->d = NULL;
}

/* Chunks [*FIRST, *LAST] that a byte range touches in the disk. */
static bool
ref_range (const struct ref *r, uint64_t off, uint64_t len,
           uint64_t *first, uint64_t *last)
{
  uint64_t end;

  if (len == 0 || off >= r->size)
    return false;
  end = len > r->size - off ? r->size : off + len;
  *first = off / r->gran;
  *last = (end - 1) / r->gran;
  return true;
}

static uint64_t
ref_set (struct ref *r, uint64_t off, uint64_t len)
{
  uint64_t first, last, c, n = 0;

  if (!ref_range (r, off, len, &first, &last))
    return 0;
  for (c = first; c <= last; c++) {
    n += !r->d[c];
    r->d[c] = 1;
  }
  r->count += n;
  return n;
}

static void
ref_clear (struct ref *r, uint64_t off, uint64_t len)
{
  uint64_t first, last, c;

  if (!ref_range (r, off, len, &first, &last))
    return;
  for (c = first; c <= last; c++)
    r->count -= r->d[c];
  memset (&r->d[first], 0, last - first + 1);
}

/* Counted the slow way, to check the count kept as we go. */
static uint64_t
ref_count (const struct ref *r)
{
  uint64_t c, n = 0;

  for (c = 0; c < r->nr; c++)
    n += r->d[c];
  return n;
}

static uint64_t
ref_count_bytes (const struct ref *r)
{
  uint64_t c, n = 0;

  for (c = 0; c < r->nr; c++)
    if (r->d[c])
      n += MIN (r->gran, r->size - c * r->gran);
  return n;
}

static int
ref_resize (struct ref *r, uint64_t size)
{
  uint64_t nr = ref_nr_chunks (size, r->gran);
  unsigned char *d = calloc (nr + 1, 1);

  CHECK (d != NULL);
  memcpy (d, r->d, MIN (nr, r->nr));
  free (r->d);
  r->d = d;
  r->nr = nr;
  r->size = size;
  r->count = ref_count (r);
  return 0;
}

/* Each dirty chunk of SRC (its bytes inside SRC's disk) marks the
 * chunks of DST it overlaps.
 */
static void
ref_merge (struct ref *dst, const struct ref *src)
{
  uint64_t c;

  for (c = 0; c < src->nr; c++) {
    if (src->d[c]) {
      uint64_t start = c * src->gran;
      uint64_t end = MIN (start + src->gran, src->size);

      ref_set (dst, start, end - start);
    }
  }
}

/* Expected bitmap_find. */
static bool
ref_find (const struct ref *r, uint64_t off, bool dirty, uint64_t *found)
{
  uint64_t c0, c;
  const unsigned char *p;

  if (off >= r->size)
    return false;
  c0 = off / r->gran;
  p = memchr (&r->d[c0], dirty, r->nr - c0);
  if (p == NULL)
    return false;
  c = p - r->d;
  *found = c == c0 ? off : c * r->gran;
  return true;
}

static bool
ref_any (const struct ref *r, uint64_t off, uint64_t len, bool dirty)
{
  uint64_t first, last;

  if (!ref_range (r, off, len, &first, &last))
    return false;
  return memchr (&r->d[first], dirty, last - first + 1) != NULL;
}

/* The raw layout the reference predicts (malloc'ed). */
static unsigned char *
ref_raw (const struct ref *r, uint64_t *raw_len)
{
  unsigned char *raw;
  uint64_t c;

  *raw_len = DIV_ROUND_UP (r->nr, 64) * 8;
  raw = calloc (*raw_len + 1, 1);
  if (raw == NULL)
    return NULL;
  for (c = 0; c < r->nr; c++)
    if (r->d[c])
      raw[c / 8] |= 1 << (c % 8);
  return raw;
}

/* A random byte range, biased to the edges that matter: chunk edges,
 * page edges, the end of the disk, and ranges that would overflow.
 */
static void
random_range (uint64_t *s, uint64_t size, uint64_t gran,
              uint64_t *off, uint64_t *len)
{
  uint64_t page = PAGE_CHUNKS * gran, b;

  switch (rnd (s) % 7) {
  case 0:                       /* small, anywhere */
    *off = rand_below (s, size + gran);
    *len = 1 + rand_below (s, 4 * gran);
    break;
  case 1:                       /* large */
    *off = rand_below (s, size + 1);
    *len = rand_below (s, size + 1);
    break;
  case 2:                       /* across a page edge */
    b = (1 + rand_below (s, size / page + 1)) * page;
    *off = b - MIN (b, rand_below (s, 3 * gran));
    *len = 1 + rand_below (s, 6 * gran);
    break;
  case 3:                       /* across the end of the disk */
    *off = size - MIN (size, rand_below (s, 3 * gran));
    *len = 1 + rand_below (s, 6 * gran);
    break;
  case 4:                       /* up to the end of everything */
    *off = rand_below (s, size + 1);
    *len = rnd (s) & 1 ? UINT64_MAX : UINT64_MAX - *off;
    break;
  case 5:                       /* whole words of chunks, give or take */
    *off = rand_below (s, size / (64 * gran) + 1) * 64 * gran;
    *len = (1 + rand_below (s, 3)) * 64 * gran;
    if (rnd (s) & 1)
      *len -= rand_below (s, gran);
    break;
  default:                      /* a single byte */
    *off = rand_below (s, size + 1);
    *len = 1;
  }
}

static int
hash_raw (const unsigned char *raw, size_t len, char hex[65])
{
  unsigned char digest[32];
  size_t i;

  CHECK (gnutls_hash_fast (GNUTLS_DIG_SHA256, raw, len, digest) == 0);
  for (i = 0; i < 32; i++)
    sprintf (&hex[2 * i], "%02x", digest[i]);
  return 0;
}

/* Random queries of every read-only call against the reference. */
static int
check_queries (const struct bitmap *bm, const struct ref *r, uint64_t *s,
               unsigned n)
{
  uint64_t off, len, got, want;
  bool dirty;

  while (n-- > 0) {
    random_range (s, r->size, r->gran, &off, &len);
    CHECK (bitmap_test (bm, off) == (off < r->size && r->d[off / r->gran]));
    CHECK (bitmap_any_dirty (bm, off, len) == ref_any (r, off, len, true));
    CHECK (bitmap_all_dirty (bm, off, len) ==
           (ref_any (r, off, len, true) && !ref_any (r, off, len, false)));
    dirty = rnd (s) & 1;
    got = want = 0;
    CHECK (bitmap_find (bm, off, dirty, &got) ==
           ref_find (r, off, dirty, &want));
    CHECK (got == want);
  }
  return 0;
}

/* Walk the extents with alternating finds and compare each chunk. */
static int
check_extents (const struct bitmap *bm, const struct ref *r)
{
  uint64_t off = 0, next, c;

  while (off < r->size) {
    bool dirty = bitmap_test (bm, off);

    CHECK (off % r->gran == 0);
    if (!bitmap_find (bm, off, !dirty, &next))
      next = r->size;
    CHECK (next > off);
    for (c = off / r->gran; c < DIV_ROUND_UP (next, r->gran); c++)
      CHECK (r->d[c] == dirty);
    if (next < r->size)
      CHECK (r->d[next / r->gran] == !dirty);
    off = next;
  }
  return 0;
}

static int
check_raw (const struct bitmap *bm, const struct ref *r, uint64_t *s)
{
  uint64_t raw_len, start;
  CLEANUP_FREE unsigned char *want = ref_raw (r, &raw_len);
  CLEANUP_FREE unsigned char *got = malloc (raw_len + 64);
  char hex[65], want_hex[65];
  size_t len;
  int i;

  CHECK (want != NULL && got != NULL);
  CHECK (bitmap_raw_length (bm) == raw_len);
  bitmap_raw_read (bm, 0, raw_len, got);
  CHECK (memcmp (got, want, raw_len) == 0);
  for (i = 0; i < 8; i++) {
    start = rand_below (s, raw_len + 1);
    len = rand_below (s, raw_len - start + 1);
    bitmap_raw_read (bm, start, len, got);
    CHECK (memcmp (got, want + start, len) == 0);
  }
  /* Past the end reads as zeros. */
  memset (got, 0xaa, 64);
  bitmap_raw_read (bm, raw_len, 64, got);
  CHECK (memcmp (got, want + raw_len, 1) == 0);
  for (i = 0; i < 64; i++)
    CHECK (got[i] == 0);

  TRY (bitmap_sha256 (bm, hex));
  TRY (hash_raw (want, raw_len, want_hex));
  CHECK (strcmp (hex, want_hex) == 0);
  return 0;
}

/* Everything a reader can observe equals the reference. */
static int
check_bitmap (const struct bitmap *bm, const struct ref *r, uint64_t *s,
              bool full)
{
  uint64_t c;

  CHECK (bitmap_size (bm) == r->size);
  CHECK (bitmap_granularity (bm) == r->gran);
  CHECK (bitmap_nr_chunks (bm) == r->nr);
  CHECK (bitmap_count_chunks (bm) == r->count);
  TRY (check_queries (bm, r, s, 8));
  if (!full)
    return 0;
  CHECK (ref_count (r) == r->count);
  CHECK (bitmap_count_bytes (bm) == ref_count_bytes (r));
  for (c = 0; c < r->nr; c++) {
    CHECK (bitmap_test (bm, c * r->gran) == r->d[c]);
    CHECK (bitmap_test (bm, MIN (r->size, (c + 1) * r->gran) - 1) == r->d[c]);
  }
  CHECK (!bitmap_test (bm, r->size));
  TRY (check_extents (bm, r));
  TRY (check_raw (bm, r, s));
  return 0;
}

static int
test_new_and_errors (void)
{
  CLEANUP_BITMAP struct bitmap *bm = NULL;
  CLEANUP_BITMAP struct bitmap *big = NULL;
  uint32_t bad[] = { 0, 1, 256, 511, 513, 3000, 65535, UINT32_C (3) << 30,
                     UINT32_MAX };
  size_t i;

  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    errno = 0;
    CHECK (bitmap_new (MiB, bad[i]) == NULL);
    CHECK (errno == EINVAL);
  }
  big = bitmap_new (TiB, BITMAP_MAX_GRANULARITY);
  CHECK (big != NULL);
  CHECK (bitmap_nr_chunks (big) == 512);

  bm = bitmap_new (12345, 512);
  CHECK (bm != NULL);
  CHECK (bitmap_size (bm) == 12345);
  CHECK (bitmap_granularity (bm) == 512);
  CHECK (bitmap_nr_chunks (bm) == 25);
  CHECK (bitmap_count_chunks (bm) == 0);
  CHECK (bitmap_count_bytes (bm) == 0);
  CHECK (bitmap_raw_length (bm) == 8);
  return 0;
}

/* A disk of 0 bytes has no chunks; every call must cope. */
static int
test_empty_disk (void)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (0, 4096);
  CLEANUP_BITMAP struct bitmap *bm2 = NULL;
  CLEANUP_FREE void *buf = NULL;
  unsigned char raw[8] = { 1 };
  uint64_t found;
  size_t len;
  char hex[65];

  CHECK (bm != NULL);
  CHECK (bitmap_nr_chunks (bm) == 0);
  CHECK (bitmap_set_range (bm, 0, 100) == 0);
  CHECK (bitmap_clear_range (bm, 0, 100) == 0);
  CHECK (!bitmap_test (bm, 0));
  CHECK (!bitmap_find (bm, 0, true, &found));
  CHECK (!bitmap_find (bm, 0, false, &found));
  CHECK (!bitmap_any_dirty (bm, 0, 1) && !bitmap_all_dirty (bm, 0, 1));
  CHECK (bitmap_raw_length (bm) == 0);
  bitmap_raw_read (bm, 0, sizeof raw, raw);
  CHECK (raw[0] == 0);
  TRY (bitmap_sha256 (bm, hex));
  CHECK (strcmp (hex, SHA256_EMPTY) == 0);
  TRY (bitmap_compact (bm));
  TRY (bitmap_serialize (bm, &buf, &len));
  bm2 = bitmap_deserialize (buf, len);
  CHECK (bm2 != NULL && bitmap_size (bm2) == 0);
  TRY (bitmap_resize (bm, 10000));
  CHECK (bitmap_set_range (bm, 9999, 1) == 1);
  CHECK (bitmap_count_bytes (bm) == 10000 - 8192);
  TRY (bitmap_resize (bm, 0));
  CHECK (bitmap_count_chunks (bm) == 0);
  return 0;
}

static int
test_unaligned_edges (void)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (1 * MiB, 4096);

  CHECK (bm != NULL);
  /* Two bytes straddling a chunk edge touch both chunks. */
  CHECK (bitmap_set_range (bm, 4095, 2) == 2);
  CHECK (bitmap_test (bm, 0) && bitmap_test (bm, 4095));
  CHECK (bitmap_test (bm, 4096) && bitmap_test (bm, 8191));
  CHECK (!bitmap_test (bm, 8192));
  CHECK (bitmap_set_range (bm, 4096, 1) == 0);
  CHECK (bitmap_set_range (bm, 0, 0) == 0);
  CHECK (bitmap_count_chunks (bm) == 2);

  /* Clearing one byte clears its whole chunk. */
  TRY (bitmap_clear_range (bm, 1, 1));
  CHECK (!bitmap_test (bm, 0) && bitmap_test (bm, 4096));
  CHECK (bitmap_count_chunks (bm) == 1);

  /* Across a word of chunks (64 chunks = 256 KiB). */
  CHECK (bitmap_set_range (bm, 256 * KiB - 1, 2) == 2);
  CHECK (bitmap_test (bm, 252 * KiB) && bitmap_test (bm, 256 * KiB));
  CHECK (bitmap_count_chunks (bm) == 3);

  /* Clipped at the end of the disk; offsets past it do nothing. */
  CHECK (bitmap_set_range (bm, MiB - 1, 100 * MiB) == 1);
  CHECK (bitmap_set_range (bm, MiB, 1) == 0);
  CHECK (bitmap_set_range (bm, UINT64_MAX, UINT64_MAX) == 0);
  CHECK (bitmap_set_range (bm, MiB - 4096, UINT64_MAX) == 0);
  CHECK (!bitmap_test (bm, MiB) && !bitmap_test (bm, UINT64_MAX));
  CHECK (bitmap_count_chunks (bm) == 4);

  /* Everything, with a length that would overflow. */
  CHECK (bitmap_set_range (bm, 10, UINT64_MAX) == 256 - 4);
  CHECK (bitmap_count_chunks (bm) == 256);
  CHECK (bitmap_count_bytes (bm) == MiB);
  TRY (bitmap_clear_range (bm, 4097, MiB - 8193));
  CHECK (bitmap_count_chunks (bm) == 2);
  CHECK (bitmap_test (bm, 0) && bitmap_test (bm, MiB - 1));
  bitmap_clear_all (bm);
  CHECK (bitmap_count_chunks (bm) == 0 && !bitmap_test (bm, 0));
  CHECK (bitmap_memory (bm) < 4096);
  return 0;
}

static int
test_partial_last_chunk (void)
{
  /* 10000 bytes at 4 KiB: chunks of 4096, 4096 and 1808 bytes. */
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (10000, 4096);
  uint64_t found;

  CHECK (bm != NULL);
  CHECK (bitmap_nr_chunks (bm) == 3);
  CHECK (bitmap_set_range (bm, 9999, 1) == 1);
  CHECK (bitmap_count_chunks (bm) == 1);
  CHECK (bitmap_count_bytes (bm) == 1808);
  CHECK (bitmap_test (bm, 8192) && !bitmap_test (bm, 10000));
  CHECK (bitmap_find (bm, 100, true, &found) && found == 8192);
  CHECK (bitmap_find (bm, 9000, true, &found) && found == 9000);
  CHECK (!bitmap_find (bm, 9000, false, &found));
  CHECK (bitmap_all_dirty (bm, 8192, 1 * MiB));
  CHECK (bitmap_set_range (bm, 0, 1) == 1);
  CHECK (bitmap_count_bytes (bm) == 4096 + 1808);
  CHECK (bitmap_set_range (bm, 0, 10000) == 1);
  CHECK (bitmap_count_bytes (bm) == 10000);
  TRY (bitmap_clear_range (bm, 9000, 1));
  CHECK (bitmap_count_bytes (bm) == 8192);
  return 0;
}

/* A disk of nearly 2^64 bytes: no arithmetic may overflow. */
static int
test_huge_disk (void)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (UINT64_MAX,
                                                 BITMAP_MAX_GRANULARITY);
  uint64_t last = UINT64_MAX & ~(uint64_t) (BITMAP_MAX_GRANULARITY - 1);
  uint64_t found;

  CHECK (bm != NULL);
  CHECK (bitmap_nr_chunks (bm) == UINT64_C (1) << 33);
  CHECK (bitmap_set_range (bm, UINT64_MAX - 1, UINT64_MAX) == 1);
  CHECK (bitmap_test (bm, last) && !bitmap_test (bm, last - 1));
  CHECK (bitmap_count_bytes (bm) == BITMAP_MAX_GRANULARITY - 1);
  CHECK (bitmap_find (bm, 0, true, &found) && found == last);
  CHECK (bitmap_find (bm, UINT64_MAX - 1, true, &found) &&
         found == UINT64_MAX - 1);
  CHECK (!bitmap_find (bm, last, false, &found));
  CHECK (bitmap_set_range (bm, last - 1, 2) == 1);
  CHECK (bitmap_count_bytes (bm) ==
         BITMAP_MAX_GRANULARITY + BITMAP_MAX_GRANULARITY - 1);
  TRY (bitmap_compact (bm));
  CHECK (bitmap_count_bytes (bm) ==
         BITMAP_MAX_GRANULARITY + BITMAP_MAX_GRANULARITY - 1);
  CHECK (bitmap_memory (bm) < 4096);
  TRY (bitmap_resize (bm, UINT64_MAX - BITMAP_MAX_GRANULARITY));
  CHECK (bitmap_count_chunks (bm) == 1);
  return 0;
}

static int
test_any_all (void)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (1 * MiB, 512);

  CHECK (bm != NULL);
  CHECK (bitmap_set_range (bm, 10 * 512, 20 * 512) == 20);
  CHECK (bitmap_any_dirty (bm, 0, 11 * 512));
  CHECK (!bitmap_any_dirty (bm, 0, 10 * 512));
  CHECK (bitmap_any_dirty (bm, 29 * 512 + 511, 1000));
  CHECK (!bitmap_any_dirty (bm, 30 * 512, MiB));
  CHECK (bitmap_all_dirty (bm, 10 * 512, 20 * 512));
  CHECK (bitmap_all_dirty (bm, 10 * 512 + 1, 20 * 512 - 2));
  CHECK (!bitmap_all_dirty (bm, 10 * 512 - 1, 2));
  CHECK (!bitmap_all_dirty (bm, 29 * 512, 513));
  /* Empty ranges and ranges past the disk have no dirty chunk. */
  CHECK (!bitmap_any_dirty (bm, 10 * 512, 0));
  CHECK (!bitmap_all_dirty (bm, 10 * 512, 0));
  CHECK (!bitmap_all_dirty (bm, MiB, 512));
  CHECK (bitmap_set_range (bm, 0, MiB) == 2048 - 20);
  CHECK (bitmap_all_dirty (bm, 0, UINT64_MAX));
  TRY (bitmap_compact (bm));
  CHECK (bitmap_all_dirty (bm, 1, UINT64_MAX));
  CHECK (bitmap_any_dirty (bm, MiB - 1, 1));
  return 0;
}

/* Walk the extents of a known pattern, also from inside chunks. */
static int
test_find_walk (void)
{
  /* Extents of chunks: clean 0-9, dirty 10-99, clean 100-32799,
   * dirty 32800 (next page), clean up to the end.
   */
  const uint64_t g = 512, size = 40 * MiB + 100;
  const uint64_t edges[] = { 10 * g, 100 * g, 32800 * g, 32801 * g };
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (size, g);
  uint64_t off, found;
  size_t i;
  int pass;

  CHECK (bm != NULL);
  CHECK (bitmap_set_range (bm, 10 * g, 90 * g) == 90);
  CHECK (bitmap_set_range (bm, 32800 * g + 7, 1) == 1);
  for (pass = 0; pass < 2; pass++) {
    off = 0;
    for (i = 0; i < sizeof edges / sizeof edges[0]; i++) {
      CHECK (bitmap_find (bm, off, i % 2 == 0, &found));
      CHECK (found == edges[i]);
      off = found;
    }
    CHECK (!bitmap_find (bm, off, true, &found));
    CHECK (bitmap_find (bm, off + 3, false, &found) && found == off + 3);
    CHECK (bitmap_find (bm, 50 * g + 3, true, &found) && found == 50 * g + 3);
    CHECK (bitmap_find (bm, 50 * g + 3, false, &found) && found == 100 * g);
    CHECK (bitmap_find (bm, 101 * g, true, &found) && found == 32800 * g);
    CHECK (bitmap_find (bm, size - 1, false, &found) && found == size - 1);
    CHECK (!bitmap_find (bm, size, false, &found));
    /* Runs: from inside a chunk to the next edge, capped by the limit. */
    CHECK (bitmap_run_end (bm, 3, size) == 10 * g);
    CHECK (bitmap_run_end (bm, 10 * g + 1, size) == 100 * g);
    CHECK (bitmap_run_end (bm, 10 * g, 20 * g) == 20 * g);
    CHECK (bitmap_run_end (bm, 32801 * g, size) == size);
    CHECK (bitmap_run_end (NULL, 5, 77) == 77);
    /* The same answers from the compact form. */
    TRY (bitmap_compact (bm));
  }

  /* A fully dirty disk has no clean chunk; a clean one no dirty one. */
  CHECK (bitmap_set_range (bm, 0, size) > 0);
  CHECK (!bitmap_find (bm, 0, false, &found));
  CHECK (bitmap_find (bm, 5, true, &found) && found == 5);
  bitmap_clear_all (bm);
  CHECK (!bitmap_find (bm, 0, true, &found));
  return 0;
}

static int
test_merge_same_granularity (void)
{
  CLEANUP_BITMAP struct bitmap *a = bitmap_new (10 * MiB + 1000, 4096);
  CLEANUP_BITMAP struct bitmap *b = bitmap_new (20 * MiB, 4096);
  CLEANUP_BITMAP struct bitmap *c = bitmap_new (MiB, 4096);

  CHECK (a && b && c);
  CHECK (bitmap_set_range (a, 0, 4096) == 1);
  CHECK (bitmap_set_range (b, 4096, 8192) == 2);
  CHECK (bitmap_set_range (b, 10 * MiB, 4096) == 1);   /* a's last chunk */
  CHECK (bitmap_set_range (b, 15 * MiB, MiB) == 256);  /* past a's end */
  TRY (bitmap_merge (a, b));
  CHECK (bitmap_count_chunks (a) == 4);
  CHECK (bitmap_count_bytes (a) == 3 * 4096 + 1000);
  CHECK (bitmap_test (a, 10 * MiB + 999));
  /* Merging again changes nothing; merging into a smaller disk clips. */
  TRY (bitmap_merge (a, b));
  CHECK (bitmap_count_chunks (a) == 4);
  TRY (bitmap_merge (c, a));
  CHECK (bitmap_count_chunks (c) == 3);
  /* From and into the compact form. */
  TRY (bitmap_compact (b));
  TRY (bitmap_compact (c));
  TRY (bitmap_merge (c, b));
  CHECK (bitmap_count_chunks (c) == 3);
  TRY (bitmap_merge (b, c));
  CHECK (bitmap_count_chunks (b) == 260);
  return 0;
}

static int
test_merge_granularities (void)
{
  CLEANUP_BITMAP struct bitmap *src = bitmap_new (4 * MiB, 64 * KiB);
  CLEANUP_BITMAP struct bitmap *fine = bitmap_new (4 * MiB, 4 * KiB);
  CLEANUP_BITMAP struct bitmap *coarse = bitmap_new (4 * MiB, MiB);
  CLEANUP_BITMAP struct bitmap *tiny = bitmap_new (1000, 4096);
  CLEANUP_BITMAP struct bitmap *dst = bitmap_new (8192, 512);

  CHECK (src && fine && coarse && tiny && dst);
  /* Chunk 1 (64-128 KiB) and chunk 17 (1088-1152 KiB). */
  CHECK (bitmap_set_range (src, 64 * KiB, 1) == 1);
  CHECK (bitmap_set_range (src, 17 * 64 * KiB + 5, 1) == 1);

  /* Finer: every 4 KiB chunk inside the 64 KiB ones. */
  TRY (bitmap_merge (fine, src));
  CHECK (bitmap_count_chunks (fine) == 32);
  CHECK (bitmap_all_dirty (fine, 64 * KiB, 64 * KiB));
  CHECK (!bitmap_test (fine, 64 * KiB - 1) && !bitmap_test (fine, 128 * KiB));
  CHECK (bitmap_all_dirty (fine, 17 * 64 * KiB, 64 * KiB));

  /* Coarser: the 1 MiB chunks that hold them. */
  TRY (bitmap_merge (coarse, src));
  CHECK (bitmap_count_chunks (coarse) == 2);
  CHECK (bitmap_test (coarse, 0) && bitmap_test (coarse, MiB));

  /* And back: a dirty 1 MiB chunk marks sixteen 64 KiB chunks. */
  bitmap_clear_all (src);
  TRY (bitmap_merge (src, coarse));
  CHECK (bitmap_count_chunks (src) == 32);

  /* Only the bytes inside SRC's disk count: the 4 KiB chunk of a
   * 1000-byte disk marks the first two 512-byte chunks only.
   */
  CHECK (bitmap_set_range (tiny, 0, 1) == 1);
  TRY (bitmap_merge (dst, tiny));
  CHECK (bitmap_count_chunks (dst) == 2);
  CHECK (bitmap_test (dst, 999) && !bitmap_test (dst, 1024));
  return 0;
}

static int
test_resize (void)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (100 * MiB + 512, 512);
  uint64_t found;

  CHECK (bm != NULL);
  CHECK (bitmap_set_range (bm, 0, 100 * MiB + 512) == 204801);
  /* Shrink in the middle of a word of the second page. */
  TRY (bitmap_resize (bm, 16 * MiB + 100 * 512 + 3));
  CHECK (bitmap_nr_chunks (bm) == 32768 + 101);
  CHECK (bitmap_count_chunks (bm) == 32768 + 101);
  CHECK (bitmap_count_bytes (bm) == 16 * MiB + 100 * 512 + 3);
  /* Grow: the new chunks, including those dropped before, are clean. */
  TRY (bitmap_resize (bm, 100 * MiB));
  CHECK (bitmap_count_chunks (bm) == 32768 + 101);
  CHECK (bitmap_test (bm, 16 * MiB + 100 * 512));
  CHECK (!bitmap_test (bm, 16 * MiB + 101 * 512));
  CHECK (bitmap_find (bm, 0, false, &found) &&
         found == 16 * MiB + 101 * 512);
  CHECK (!bitmap_find (bm, found, true, &found));
  CHECK (bitmap_set_range (bm, 99 * MiB, 2 * MiB) == 2048);
  /* Shrink to less than a page, then to a page edge, then to 0. */
  TRY (bitmap_resize (bm, 5000));
  CHECK (bitmap_count_chunks (bm) == 10);
  CHECK (bitmap_memory (bm) <= 4096 + 512);
  TRY (bitmap_resize (bm, 16 * MiB));
  CHECK (bitmap_count_chunks (bm) == 10);
  TRY (bitmap_resize (bm, 0));
  CHECK (bitmap_count_chunks (bm) == 0);
  TRY (bitmap_resize (bm, 1 * MiB));
  CHECK (!bitmap_any_dirty (bm, 0, MiB));
  /* Resizing a compact bitmap. */
  CHECK (bitmap_set_range (bm, 1000, 1) == 1);
  TRY (bitmap_compact (bm));
  TRY (bitmap_resize (bm, 500));
  CHECK (bitmap_count_chunks (bm) == 0);
  return 0;
}

/* Everything a reader sees, to compare two states of one bitmap. */
struct snapshot {
  uint64_t chunks, bytes;
  char hex[65];
  unsigned char *raw;
  void *ser;
  size_t ser_len;
  unsigned char *test, *find_dirty, *find_clean;
};

static void
snapshot_free (struct snapshot *snap)
{
  free (snap->raw);
  free (snap->ser);
  free (snap->test);
  free (snap->find_dirty);
  free (snap->find_clean);
}

static int
snapshot_take (const struct bitmap *bm, struct snapshot *snap)
{
  uint64_t n = bitmap_nr_chunks (bm), g = bitmap_granularity (bm), c, f;

  memset (snap, 0, sizeof *snap);
  snap->chunks = bitmap_count_chunks (bm);
  snap->bytes = bitmap_count_bytes (bm);
  TRY (bitmap_sha256 (bm, snap->hex));
  snap->raw = malloc (bitmap_raw_length (bm) + 1);
  snap->test = malloc (n + 1);
  snap->find_dirty = malloc (8 * n + 1);
  snap->find_clean = malloc (8 * n + 1);
  CHECK (snap->raw && snap->test && snap->find_dirty && snap->find_clean);
  bitmap_raw_read (bm, 0, bitmap_raw_length (bm), snap->raw);
  TRY (bitmap_serialize (bm, &snap->ser, &snap->ser_len));
  for (c = 0; c < n; c++) {
    snap->test[c] = bitmap_test (bm, c * g + g / 2) |
      bitmap_any_dirty (bm, c * g, 2 * g) << 1 |
      bitmap_all_dirty (bm, c * g + 1, 2 * g) << 2;
    f = bitmap_find (bm, c * g + 1, true, &f) ? f : UINT64_MAX;
    memcpy (&snap->find_dirty[8 * c], &f, 8);
    f = bitmap_find (bm, c * g + 1, false, &f) ? f : UINT64_MAX;
    memcpy (&snap->find_clean[8 * c], &f, 8);
  }
  return 0;
}

static int
snapshot_equal (const struct bitmap *bm, const struct snapshot *a,
                const struct snapshot *b)
{
  uint64_t n = bitmap_nr_chunks (bm);

  CHECK (a->chunks == b->chunks && a->bytes == b->bytes);
  CHECK (strcmp (a->hex, b->hex) == 0);
  CHECK (memcmp (a->raw, b->raw, bitmap_raw_length (bm)) == 0);
  CHECK (a->ser_len == b->ser_len);
  CHECK (memcmp (a->ser, b->ser, a->ser_len) == 0);
  CHECK (memcmp (a->test, b->test, n) == 0);
  CHECK (memcmp (a->find_dirty, b->find_dirty, 8 * n) == 0);
  CHECK (memcmp (a->find_clean, b->find_clean, 8 * n) == 0);
  return 0;
}

/* Compact, then every read gives the same answers; a write thaws. */
static int
test_compact_reads (void)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (50 * MiB + 3, 512);
  CLEANUP_BITMAP struct bitmap *copy = NULL;
  struct snapshot before, after;
  uint64_t s = seed, off, len;
  size_t paged, compact;
  int i, r;

  CHECK (bm != NULL);
  for (i = 0; i < 300; i++) {
    random_range (&s, 50 * MiB, 512, &off, &len);
    len = MIN (len, 64 * KiB);
    CHECK (bitmap_set_range (bm, off, len) >= 0);
  }
  CHECK (bitmap_set_range (bm, 20 * MiB, 3 * MiB) >= 0);  /* all-ones */
  paged = bitmap_memory (bm);
  TRY (snapshot_take (bm, &before));
  TRY (bitmap_compact (bm));
  TRY (bitmap_compact (bm));            /* already compact: no-op */
  compact = bitmap_memory (bm);
  TRY (snapshot_take (bm, &after));
  r = snapshot_equal (bm, &before, &after);
  snapshot_free (&after);
  printf ("  compact: %zu bytes paged -> %zu bytes compact\n",
          paged, compact);
  CHECK (r == 0);
  CHECK (compact < paged);

  /* A copy of a compact bitmap is paged and equal. */
  copy = bitmap_copy (bm);
  CHECK (copy != NULL);
  TRY (snapshot_take (copy, &after));
  r = snapshot_equal (bm, &before, &after);
  snapshot_free (&after);
  CHECK (r == 0);

  /* A write thaws: the bitmap is paged again, old bits and new. */
  CHECK (bitmap_set_range (bm, 0, 1) == !(before.test[0] & 1));
  CHECK (bitmap_memory (bm) > compact);
  CHECK (bitmap_test (bm, 0));
  TRY (bitmap_clear_range (bm, 0, 1));
  TRY (bitmap_compact (bm));
  if (before.test[0] & 1)
    CHECK (bitmap_set_range (bm, 0, 1) == 1);
  TRY (snapshot_take (bm, &after));
  r = snapshot_equal (bm, &before, &after);
  snapshot_free (&after);
  snapshot_free (&before);
  CHECK (r == 0);
  return 0;
}

/* Every changing call works on the compact form. */
static int
test_compact_changes (void)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (8 * MiB, 4096);
  CLEANUP_BITMAP struct bitmap *other = bitmap_new (8 * MiB, 4096);
  size_t empty;

  CHECK (bm && other);
  empty = bitmap_memory (bm);
  CHECK (bitmap_set_range (bm, 0, 8 * MiB) == 2048);
  CHECK (bitmap_set_range (other, 4 * MiB, 1) == 1);

  TRY (bitmap_compact (bm));
  TRY (bitmap_clear_range (bm, 4096, 8 * MiB - 8192));
  CHECK (bitmap_count_chunks (bm) == 2);
  TRY (bitmap_compact (bm));
  TRY (bitmap_merge (bm, other));
  CHECK (bitmap_count_chunks (bm) == 3);
  TRY (bitmap_compact (bm));
  TRY (bitmap_resize (bm, 4 * MiB + 1));
  CHECK (bitmap_count_chunks (bm) == 2);
  TRY (bitmap_compact (bm));
  bitmap_clear_all (bm);
  CHECK (bitmap_count_chunks (bm) == 0 && !bitmap_test (bm, 0));
  CHECK (bitmap_memory (bm) < empty);
  CHECK (bitmap_set_range (bm, 0, 1) == 1);
  CHECK (bitmap_count_chunks (bm) == 1);
  return 0;
}

static int
test_copy (void)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (33 * MiB, 512);
  CLEANUP_BITMAP struct bitmap *copy = NULL;

  CHECK (bm != NULL);
  CHECK (bitmap_set_range (bm, 16 * MiB - 1, 2) == 2);
  copy = bitmap_copy (bm);
  CHECK (copy != NULL);
  CHECK (bitmap_size (copy) == 33 * MiB);
  CHECK (bitmap_count_chunks (copy) == 2);
  CHECK (bitmap_memory (copy) == bitmap_memory (bm));
  /* Deep: changing one leaves the other alone. */
  CHECK (bitmap_set_range (copy, 0, 1) == 1);
  CHECK (!bitmap_test (bm, 0));
  TRY (bitmap_clear_range (bm, 16 * MiB, 1));
  CHECK (bitmap_test (copy, 16 * MiB));
  return 0;
}

static int
test_raw_layout (void)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (100 * 512, 512);
  unsigned char raw[20];

  CHECK (bm != NULL);
  CHECK (bitmap_raw_length (bm) == 16);       /* 13 bytes, padded */
  CHECK (bitmap_set_range (bm, 0, 1) == 1);   /* bit 0 of byte 0 */
  CHECK (bitmap_set_range (bm, 9 * 512, 1) == 1);   /* bit 1 of byte 1 */
  CHECK (bitmap_set_range (bm, 99 * 512, 1) == 1);  /* bit 3 of byte 12 */
  memset (raw, 0xff, sizeof raw);
  bitmap_raw_read (bm, 0, sizeof raw, raw);
  CHECK (raw[0] == 0x01 && raw[1] == 0x02 && raw[12] == 0x08);
  CHECK (raw[2] == 0 && raw[11] == 0 && raw[13] == 0 && raw[19] == 0);
  memset (raw, 0xff, sizeof raw);
  bitmap_raw_read (bm, 12, 1, raw);
  CHECK (raw[0] == 0x08 && raw[1] == 0xff);
  return 0;
}

static int
test_sha256_vectors (void)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (64 * MiB, 64 * KiB);
  char hex[65];

  CHECK (bm != NULL);
  TRY (bitmap_sha256 (bm, hex));
  CHECK (strcmp (hex, SHA256_CLEAN_64M) == 0);
  TRY (bitmap_compact (bm));
  TRY (bitmap_sha256 (bm, hex));
  CHECK (strcmp (hex, SHA256_CLEAN_64M) == 0);
  return 0;
}

/* The streamed hash equals the hash of bitmap_raw_read's output. */
static int
test_sha256_random (void)
{
  const uint64_t sizes[] = { 1, 4095, 40 * MiB + 512, 100 * MiB + 7 };
  uint64_t s = seed ^ 0x5a, off, len;
  char hex[65], want[65];
  size_t i;
  int j, form;

  for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    CLEANUP_BITMAP struct bitmap *bm = bitmap_new (sizes[i], 512);
    CLEANUP_FREE unsigned char *raw = NULL;
    uint64_t raw_len;

    CHECK (bm != NULL);
    for (j = 0; j < 50; j++) {
      random_range (&s, sizes[i], 512, &off, &len);
      CHECK (bitmap_set_range (bm, off, MIN (len, 100 * KiB)) >= 0);
    }
    raw_len = bitmap_raw_length (bm);
    raw = malloc (raw_len + 1);
    CHECK (raw != NULL);
    for (form = 0; form < 2; form++) {
      bitmap_raw_read (bm, 0, raw_len, raw);
      TRY (hash_raw (raw, raw_len, want));
      TRY (bitmap_sha256 (bm, hex));
      CHECK (strcmp (hex, want) == 0);
      TRY (bitmap_compact (bm));
    }
  }
  return 0;
}

static int
roundtrip (const struct bitmap *bm, size_t *lenp)
{
  CLEANUP_FREE void *buf = NULL;
  CLEANUP_FREE void *buf2 = NULL;
  CLEANUP_BITMAP struct bitmap *bm2 = NULL;
  size_t len, len2;

  TRY (bitmap_serialize (bm, &buf, &len));
  bm2 = bitmap_deserialize (buf, len);
  CHECK (bm2 != NULL);
  CHECK (bitmap_size (bm2) == bitmap_size (bm));
  CHECK (bitmap_granularity (bm2) == bitmap_granularity (bm));
  CHECK (bitmap_count_chunks (bm2) == bitmap_count_chunks (bm));
  /* One encoding per bitmap: the copy serialises to the same bytes. */
  TRY (bitmap_serialize (bm2, &buf2, &len2));
  CHECK (len2 == len && memcmp (buf, buf2, len) == 0);
  *lenp = len;
  return 0;
}

static int
test_serialize_roundtrip (void)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (TiB, 64 * KiB);
  CLEANUP_BITMAP struct bitmap *small = bitmap_new (1000 * 512 + 1, 512);
  uint64_t s = seed ^ 0x77;
  size_t len;
  int i;

  CHECK (bm && small);
  TRY (roundtrip (bm, &len));
  printf ("  serialize: clean 1 TiB: %zu bytes\n", len);
  CHECK (len <= 64);
  for (i = 0; i < 512; i++)
    CHECK (bitmap_set_range (bm, rand_below (&s, TiB / 4096) * 4096,
                             4096) >= 0);
  TRY (roundtrip (bm, &len));
  printf ("  serialize: 512 random 4 KiB writes on 1 TiB: %zu bytes\n", len);
  CHECK (len <= 48 + 512 * 24);
  CHECK (bitmap_set_range (bm, 0, TiB) > 0);
  TRY (roundtrip (bm, &len));
  printf ("  serialize: fully dirty 1 TiB: %zu bytes\n", len);
  CHECK (len <= 2 * MiB + 64);

  /* The last (partial) chunk and word, from both forms. */
  CHECK (bitmap_set_range (small, 1000 * 512, 1) == 1);
  CHECK (bitmap_set_range (small, 63 * 512, 2 * 512) == 2);
  TRY (roundtrip (small, &len));
  TRY (bitmap_compact (small));
  TRY (roundtrip (small, &len));
  return 0;
}

/* A small serialised bitmap with two runs, for the corruption tests. */
static int
small_serialized (void **buf, size_t *len)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (200 * 512 + 100, 512);

  CHECK (bm != NULL);
  CHECK (bitmap_set_range (bm, 3 * 512, 70 * 512) == 70);
  CHECK (bitmap_set_range (bm, 200 * 512, 1) == 1);
  TRY (bitmap_serialize (bm, buf, len));
  return 0;
}

/* Deserialise from a copy that ends where an inaccessible page
 * begins, so that reading past LEN crashes.
 */
static struct bitmap *
deserialize_copy (const void *buf, size_t len)
{
  size_t page = sysconf (_SC_PAGESIZE);
  size_t span = ROUND_UP (len, page) + page;
  unsigned char *map;
  struct bitmap *bm;
  int saved;

  map = mmap (NULL, span, PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED)
    abort ();
  if (mprotect (map + span - page, page, PROT_NONE) == -1)
    abort ();
  memcpy (map + span - page - len, buf, len);
  bm = bitmap_deserialize (map + span - page - len, len);
  saved = errno;
  munmap (map, span);
  errno = saved;
  return bm;
}

static int
test_serialize_truncated (void)
{
  CLEANUP_FREE void *buf = NULL;
  CLEANUP_FREE unsigned char *longer = NULL;
  struct bitmap *bm;
  size_t len, n;

  TRY (small_serialized (&buf, &len));
  for (n = 0; n < len; n++) {
    errno = 0;
    bm = deserialize_copy (buf, n);
    if (bm != NULL)
      bitmap_free (bm);
    CHECK (bm == NULL);
    CHECK (errno == EINVAL);
  }
  /* Trailing bytes are rejected too. */
  longer = calloc (len + 8, 1);
  CHECK (longer != NULL);
  memcpy (longer, buf, len);
  for (n = len + 1; n <= len + 8; n++) {
    errno = 0;
    CHECK (deserialize_copy (longer, n) == NULL && errno == EINVAL);
  }
  bm = deserialize_copy (buf, len);
  CHECK (bm != NULL);
  bitmap_free (bm);
  return 0;
}

/* Any accepted buffer gives a bitmap whose count and bits agree. */
static int
check_sane (const struct bitmap *bm)
{
  uint64_t raw_len = bitmap_raw_length (bm), i, n = 0;
  uint64_t nr = bitmap_nr_chunks (bm);
  CLEANUP_FREE unsigned char *raw = malloc (raw_len + 1);

  CHECK (raw != NULL);
  bitmap_raw_read (bm, 0, raw_len, raw);
  for (i = 0; i < raw_len * 8; i++) {
    if (raw[i / 8] >> (i % 8) & 1) {
      CHECK (i < nr);
      n++;
    }
  }
  CHECK (n == bitmap_count_chunks (bm));
  return 0;
}

static int
test_serialize_corrupt (void)
{
  CLEANUP_FREE void *buf = NULL;
  CLEANUP_FREE unsigned char *bad = NULL;
  size_t len, i;
  unsigned flip;
  int accepted = 0;

  TRY (small_serialized (&buf, &len));
  bad = malloc (len);
  CHECK (bad != NULL);
  for (i = 0; i < len; i++) {
    /* The high bytes of the disk size only make a bigger, valid disk
     * (whose directory might be huge): the caller's checksum's job.
     */
    if (i >= 20 && i < 24)
      continue;
    for (flip = 1; flip < 256; flip <<= 1) {
      struct bitmap *bm;

      memcpy (bad, buf, len);
      bad[i] ^= flip;
      errno = 0;
      bm = deserialize_copy (bad, len);
      if (bm == NULL) {
        CHECK (errno == EINVAL);
        continue;
      }
      accepted++;
      /* Only the disk size has no redundancy to catch a change. */
      CHECK (i >= 16 && i < 20);
      if (check_sane (bm) == -1) {
        bitmap_free (bm);
        return -1;
      }
      bitmap_free (bm);
    }
  }
  printf ("  corrupt: %d of %zu single-bit flips gave another valid "
          "bitmap (disk size)\n", accepted, 8 * len);
  return 0;
}

/* A hand-made buffer for a disk of 130 chunks of 512 bytes (words 0,
 * 1 and 2, the last holding 2 chunks), with run data BODY.
 */
struct crafted {
  const char *what;
  uint32_t version, gran;
  uint64_t count, nr_runs, nr_words;
  size_t n;
  uint64_t body[6];
};

static const struct crafted crafted_bad[] = {
  { "version", 2, 512, 2, 2, 2, 6, { 0, 1, 0x10, 2, 1, 0x2 } },
  { "granularity", 1, 1000, 2, 2, 2, 6, { 0, 1, 0x10, 2, 1, 0x2 } },
  { "runs count", 1, 512, 2, 3, 2, 6, { 0, 1, 0x10, 2, 1, 0x2 } },
  { "huge runs count", 1, 512, 2, UINT64_MAX / 8, 2, 6,
    { 0, 1, 0x10, 2, 1, 0x2 } },
  { "huge words count", 1, 512, 2, 2, UINT64_C (1) << 61, 6,
    { 0, 1, 0x10, 2, 1, 0x2 } },
  { "dirty count", 1, 512, 3, 2, 2, 6, { 0, 1, 0x10, 2, 1, 0x2 } },
  { "bit past the disk", 1, 512, 2, 2, 2, 6, { 0, 1, 0x10, 2, 1, 0x4 } },
  { "word past the disk", 1, 512, 2, 2, 2, 6, { 0, 1, 0x10, 3, 1, 0x1 } },
  { "runs out of order", 1, 512, 2, 2, 2, 6, { 2, 1, 0x1, 0, 1, 0x10 } },
  { "runs overlap", 1, 512, 2, 2, 2, 6, { 1, 1, 0x1, 1, 1, 0x10 } },
  { "runs adjacent", 1, 512, 2, 2, 2, 6, { 0, 1, 0x1, 1, 1, 0x10 } },
  { "empty run", 1, 512, 0, 1, 0, 2, { 0, 0 } },
  { "zero word", 1, 512, 1, 1, 2, 4, { 0, 2, 0x1, 0 } },
  { "run past the disk", 1, 512, 3, 1, 3, 5, { 1, 3, 1, 1, 1 } },
  { "run past the buffer", 1, 512, 1, 1, 1, 3, { 0, 2, 0x10 } },
  { "words after the runs", 1, 512, 1, 1, 2, 4, { 0, 1, 0x10, 0x20 } },
  { "run header past the buffer", 1, 512, 2, 2, 1, 5, { 0, 2, 1, 1, 2 } },
  { "huge run", 1, 512, 2, 2, 2, 6, { 0, UINT64_MAX, 0x10, 2, 1, 0x2 } },
};

static void
put_le (unsigned char *p, uint64_t v, size_t bytes)
{
  size_t k;

  for (k = 0; k < bytes; k++)
    p[k] = v >> (8 * k);
}

static size_t
craft (unsigned char *p, const struct crafted *c)
{
  size_t i;

  memcpy (p, "NCBITMAP", 8);
  put_le (p + 8, c->version, 4);
  put_le (p + 12, c->gran, 4);
  put_le (p + 16, 130 * 512, 8);
  put_le (p + 24, c->count, 8);
  put_le (p + 32, c->nr_runs, 8);
  put_le (p + 40, c->nr_words, 8);
  for (i = 0; i < c->n; i++)
    put_le (p + 48 + 8 * i, c->body[i], 8);
  return 48 + 8 * c->n;
}

static int
test_serialize_crafted (void)
{
  const struct crafted good = {
    "good", 1, 512, 2, 2, 2, 6, { 0, 1, 0x10, 2, 1, 0x2 }
  };
  unsigned char p[128];
  struct bitmap *bm;
  size_t i, len;

  len = craft (p, &good);
  bm = deserialize_copy (p, len);
  CHECK (bm != NULL);
  CHECK (bitmap_count_chunks (bm) == 2 && bitmap_test (bm, 129 * 512));
  CHECK (bitmap_test (bm, 4 * 512) && !bitmap_test (bm, 64 * 512));
  bitmap_free (bm);
  p[7] = 'Q';                   /* magic */
  errno = 0;
  CHECK (deserialize_copy (p, len) == NULL && errno == EINVAL);

  for (i = 0; i < sizeof crafted_bad / sizeof crafted_bad[0]; i++) {
    len = craft (p, &crafted_bad[i]);
    errno = 0;
    bm = deserialize_copy (p, len);
    if (bm != NULL || errno != EINVAL) {
      fprintf (stderr, "test-bitmap: crafted buffer accepted: %s\n",
               crafted_bad[i].what);
      bitmap_free (bm);
      return -1;
    }
  }
  return 0;
}

static int
test_memory_clean (void)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (TiB, 64 * KiB);
  CLEANUP_BITMAP struct bitmap *fine = bitmap_new (TiB, 512);

  CHECK (bm && fine);
  printf ("  memory: clean 1 TiB @ 64 KiB: %zu bytes; @ 512: %zu bytes\n",
          bitmap_memory (bm), bitmap_memory (fine));
  CHECK (bitmap_memory (bm) < 64 * KiB);
  CHECK (bitmap_memory (fine) < 1 * MiB);
  TRY (bitmap_compact (fine));
  CHECK (bitmap_memory (fine) < 1 * KiB);
  return 0;
}

static int
test_memory_full (void)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (TiB, 64 * KiB);
  char hex[65];

  CHECK (bm != NULL);
  CHECK (bitmap_set_range (bm, 0, TiB) == 16 * 1024 * 1024);
  CHECK (bitmap_count_bytes (bm) == TiB);
  printf ("  memory: fully dirty 1 TiB @ 64 KiB: %zu bytes\n",
          bitmap_memory (bm));
  CHECK (bitmap_memory (bm) <= 2 * MiB + 100 * KiB);
  TRY (bitmap_sha256 (bm, hex));
  CHECK (strlen (hex) == 64);
  bitmap_clear_all (bm);
  CHECK (bitmap_memory (bm) < 64 * KiB);
  return 0;
}

static int
test_memory_compact_sparse (void)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (TiB, 64 * KiB);
  uint64_t s = seed ^ 0x1234;
  size_t paged;
  int i;

  CHECK (bm != NULL);
  for (i = 0; i < 512; i++)
    CHECK (bitmap_set_range (bm, rand_below (&s, TiB / 4096) * 4096,
                             4096) >= 0);
  paged = bitmap_memory (bm);
  TRY (bitmap_compact (bm));
  printf ("  memory: 512 random 4 KiB writes on 1 TiB: %zu bytes paged, "
          "%zu bytes compact\n", paged, bitmap_memory (bm));
  CHECK (bitmap_memory (bm) <= 16 * KiB);
  return 0;
}

/* The project's target: 1000 checkpoints of a 1 TiB disk. */
static int
test_memory_checkpoints (void)
{
  const int n = quick ? 100 : 1000;
  struct bitmap **bms = calloc (n, sizeof *bms);
  uint64_t s = seed ^ 0x4321, total = 0;
  int i, j, r = 0;

  CHECK (bms != NULL);
  for (i = 0; i < n && r == 0; i++) {
    bms[i] = bitmap_new (TiB, 64 * KiB);
    if (bms[i] == NULL) {
      r = -1;
      break;
    }
    for (j = 0; j < 512 && r == 0; j++)
      if (bitmap_set_range (bms[i], rand_below (&s, TiB), 1) == -1)
        r = -1;
    if (r == 0)
      r = bitmap_compact (bms[i]);
    if (r == 0)
      total += bitmap_memory (bms[i]);
  }
  for (i = 0; i < n; i++)
    bitmap_free (bms[i]);
  free (bms);
  CHECK (r == 0);
  total = total * 1000 / n;
  printf ("  memory: 1000 compact checkpoints of 1 TiB, 512 dirty chunks "
          "each: %" PRIu64 " bytes%s\n", total,
          quick ? " (extrapolated from 100)" : "");
  CHECK (total < 16 * MiB);
  return 0;
}

struct config {
  uint64_t size;
  uint64_t gran;
};

/* A random bitmap and its reference, for merges. */
static int
random_other (uint64_t *s, uint64_t max_size, struct bitmap **bmp,
              struct ref *r)
{
  const uint64_t grans[] = { 512, 4096, 64 * KiB, MiB, 256 * MiB };
  uint64_t size = rand_below (s, max_size + 1), gran, off, len;
  int i;

  gran = grans[rand_below (s, 5)];
  while (size / gran > 200000 && gran < BITMAP_MAX_GRANULARITY)
    gran *= 2;
  *bmp = bitmap_new (size, gran);
  CHECK (*bmp != NULL);
  TRY (ref_init (r, size, gran));
  for (i = rand_below (s, 6); i > 0; i--) {
    random_range (s, size, gran, &off, &len);
    CHECK (bitmap_set_range (*bmp, off, len) ==
           (int64_t) ref_set (r, off, len));
  }
  if (rnd (s) & 1)
    TRY (bitmap_compact (*bmp));
  return 0;
}

/* One random changing call on BM and the reference. */
static int
random_op (struct bitmap **bmp, struct ref *r, uint64_t *s, uint64_t base)
{
  struct bitmap *bm = *bmp, *other;
  struct ref oref;
  uint64_t off, len, op = rand_below (s, 100);
  CLEANUP_FREE void *buf = NULL;
  size_t buf_len;

  random_range (s, r->size, r->gran, &off, &len);
  if (op < 45)
    CHECK (bitmap_set_range (bm, off, len) == (int64_t) ref_set (r, off, len));
  else if (op < 65) {
    TRY (bitmap_clear_range (bm, off, len));
    ref_clear (r, off, len);
  }
  else if (op < 66) {
    bitmap_clear_all (bm);
    memset (r->d, 0, r->nr);
    r->count = 0;
  }
  else if (op < 70) {
    /* Anything up to twice the starting size, often not aligned. */
    uint64_t size = rand_below (s, 2 * base + 10 * r->gran + 1);

    TRY (bitmap_resize (bm, size));
    TRY (ref_resize (r, size));
  }
  else if (op < 78)
    TRY (bitmap_compact (bm));
  else if (op < 82) {
    int merged;

    TRY (random_other (s, 2 * r->size + r->gran, &other, &oref));
    merged = bitmap_merge (bm, other);
    if (merged == 0)
      ref_merge (r, &oref);
    bitmap_free (other);
    ref_free (&oref);
    CHECK (merged == 0);
  }
  else if (op < 85) {
    other = bitmap_copy (bm);
    CHECK (other != NULL);
    bitmap_free (bm);
    *bmp = other;
  }
  else if (op < 87) {
    TRY (bitmap_serialize (bm, &buf, &buf_len));
    other = bitmap_deserialize (buf, buf_len);
    CHECK (other != NULL);
    bitmap_free (bm);
    *bmp = other;
  }
  /* Otherwise only the queries below. */
  return 0;
}

static int
random_config (const struct config *cfg, unsigned iterations, uint64_t *s)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (cfg->size, cfg->gran);
  struct ref r;
  unsigned i;
  int ret = 0;

  CHECK (bm != NULL);
  TRY (ref_init (&r, cfg->size, cfg->gran));
  for (i = 0; i < iterations && ret == 0; i++) {
    ret = random_op (&bm, &r, s, cfg->size);
    if (ret == 0)
      ret = check_bitmap (bm, &r, s, i % 250 == 249 || i + 1 == iterations);
    if (ret == -1)
      fprintf (stderr, "test-bitmap: random: size %" PRIu64 " granularity %"
               PRIu64 ": failed at step %u\n", cfg->size, cfg->gran, i);
  }
  ref_free (&r);
  return ret;
}

static int
test_random_vs_reference (void)
{
  const struct config configs[] = {
    { 1, 512 },
    { 511, 512 },
    { 513, 512 },
    { 64 * 512 * 3 + 100, 512 },
    { 16 * MiB + 4097, 512 },                  /* just past a page */
    { 40 * MiB + 1, 512 },                     /* three pages */
    { 12345678901, MiB },
    { GiB + 12345, 64 * KiB },
    { 3 * GiB + 7, 4096 },                     /* 24 pages */
    { 64 * GiB, 64 * KiB },                    /* exactly 32 pages */
    { TiB + 5, BITMAP_MAX_GRANULARITY },
  };
  const unsigned iterations = quick ? 300 : 3000;
  uint64_t s = seed;
  size_t i;

  for (i = 0; i < sizeof configs / sizeof configs[0]; i++)
    TRY (random_config (&configs[i], iterations, &s));
  return 0;
}

/* Threads set random ranges, each keeping a reference of its own. */
struct setter {
  struct bitmap *bm;
  pthread_barrier_t *start;     /* all begin at once, to race */
  uint64_t size, gran, seed;
  unsigned ops;
  unsigned char *ref;
  int64_t added;
  int err;
};

static void *
setter_thread (void *arg)
{
  struct setter *t = arg;
  struct ref r = { .size = t->size, .gran = t->gran, .d = t->ref };
  uint64_t off, len;
  unsigned i;
  int64_t n;

  r.nr = ref_nr_chunks (t->size, t->gran);
  pthread_barrier_wait (t->start);
  for (i = 0; i < t->ops; i++) {
    random_range (&t->seed, t->size, t->gran, &off, &len);
    if (len > 4 * MiB && (t->seed & 15) != 0)
      len = 1 + len % (64 * KiB);
    n = bitmap_set_range (t->bm, off, len);
    if (n < 0)
      t->err = 1;
    t->added += n;
    ref_set (&r, off, len);
  }
  return NULL;
}

/* Reads while the setters run: the count never goes down and a chunk
 * once seen dirty stays dirty.
 */
struct reader {
  struct bitmap *bm;
  uint64_t size;
  bool stop;
  int err;
  unsigned rounds;
};

static void *
reader_thread (void *arg)
{
  struct reader *t = arg;
  uint64_t last_count = 0, off = 0, found, count;
  unsigned char raw[64];

  while (!__atomic_load_n (&t->stop, __ATOMIC_ACQUIRE)) {
    count = bitmap_count_chunks (t->bm);
    if (count < last_count)
      t->err = 1;
    last_count = count;
    if (bitmap_find (t->bm, off, true, &found)) {
      if (!bitmap_test (t->bm, found) || found < off)
        t->err = 1;
      off = found + 1;
    }
    else
      off = 0;
    bitmap_raw_read (t->bm, off / 4096, sizeof raw, raw);
    (void) bitmap_count_bytes (t->bm);
    t->rounds++;
  }
  return NULL;
}

static int
run_threads (struct bitmap *bm, struct ref *r, uint64_t s, unsigned ops)
{
  struct setter setters[4];
  struct reader reader = { .bm = bm, .size = r->size };
  pthread_t tids[4], rtid;
  pthread_barrier_t start;
  int64_t added = 0;
  uint64_t before = bitmap_count_chunks (bm), c;
  int i;

  CHECK (pthread_barrier_init (&start, NULL, 4) == 0);
  CHECK (pthread_create (&rtid, NULL, reader_thread, &reader) == 0);
  for (i = 0; i < 4; i++) {
    setters[i] = (struct setter) {
      .bm = bm, .start = &start, .size = r->size, .gran = r->gran, .ops = ops,
      .seed = s + 7919 * (i + 1), .ref = calloc (r->nr + 1, 1),
    };
    CHECK (setters[i].ref != NULL);
    CHECK (pthread_create (&tids[i], NULL, setter_thread, &setters[i]) == 0);
  }
  for (i = 0; i < 4; i++) {
    CHECK (pthread_join (tids[i], NULL) == 0);
    CHECK (setters[i].err == 0);
    added += setters[i].added;
    for (c = 0; c < r->nr; c++)
      r->d[c] |= setters[i].ref[c];
    free (setters[i].ref);
  }
  r->count = ref_count (r);
  __atomic_store_n (&reader.stop, true, __ATOMIC_RELEASE);
  CHECK (pthread_join (rtid, NULL) == 0);
  pthread_barrier_destroy (&start);
  CHECK (reader.err == 0);
  /* Each chunk was counted by exactly one setter. */
  CHECK (bitmap_count_chunks (bm) == r->count);
  CHECK ((uint64_t) added == r->count - before);
  return 0;
}

static int
test_threads (void)
{
  /* 17 pages at 512 bytes: setters race to install the same pages. */
  const uint64_t size = 256 * MiB + 1000, gran = 512;
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (size, gran);
  const unsigned ops = quick ? 2000 : 20000;
  uint64_t s = seed ^ 0xabc;
  struct ref r;
  int ret;

  CHECK (bm != NULL);
  TRY (ref_init (&r, size, gran));
  ret = run_threads (bm, &r, s, ops);
  if (ret == 0)
    ret = check_bitmap (bm, &r, &s, true);
  /* Again from the compact form: the setters race to thaw it while
   * the reader walks it.
   */
  if (ret == 0)
    ret = bitmap_compact (bm);
  if (ret == 0)
    ret = run_threads (bm, &r, s + 1, ops);
  if (ret == 0)
    ret = check_bitmap (bm, &r, &s, true);
  ref_free (&r);
  return ret;
}

struct test {
  const char *name;
  int (*fn) (void);
};

/* bitmap_deserialize_as refuses a buffer for another disk before it
 * allocates: one claiming 16 TiB in 512-byte chunks fails at once with
 * EINVAL for a 1 MiB disk.  (Not larger: making the huge bitmap itself
 * allocates its page directory, 8 MiB here, and under ASan an
 * allocation of terabytes aborts instead of returning NULL.)
 */
static int
test_deserialize_as (void)
{
  CLEANUP_BITMAP struct bitmap *bm = bitmap_new (1 * MiB, 4096);
  CLEANUP_BITMAP struct bitmap *huge = bitmap_new (UINT64_C (1) << 44, 512);
  CLEANUP_BITMAP struct bitmap *bm2 = NULL;
  CLEANUP_FREE void *buf = NULL, *hbuf = NULL;
  size_t len, hlen;

  CHECK (bm != NULL);
  CHECK (bitmap_set_range (bm, 8192, 5000) == 2);
  TRY (bitmap_serialize (bm, &buf, &len));
  CHECK (bitmap_deserialize_as (buf, len, 2 * MiB, 4096) == NULL &&
         errno == EINVAL);
  CHECK (bitmap_deserialize_as (buf, len, 1 * MiB, 512) == NULL &&
         errno == EINVAL);
  bm2 = bitmap_deserialize_as (buf, len, 1 * MiB, 4096);
  CHECK (bm2 != NULL && bitmap_count_bytes (bm2) == 8192);
  /* A huge one can be made lazily (its directory is not), so build
   * its buffer and check only that it is refused for a small disk.
   */
  CHECK (huge != NULL);
  TRY (bitmap_serialize (huge, &hbuf, &hlen));
  CHECK (bitmap_deserialize_as (hbuf, hlen, 1 * MiB, 512) == NULL &&
         errno == EINVAL);
  return 0;
}

static const struct test tests[] = {
  { "new and errors", test_new_and_errors },
  { "empty disk", test_empty_disk },
  { "unaligned edges", test_unaligned_edges },
  { "partial last chunk", test_partial_last_chunk },
  { "huge disk", test_huge_disk },
  { "deserialize for a given disk", test_deserialize_as },
  { "any and all dirty", test_any_all },
  { "find walks extents", test_find_walk },
  { "merge, same granularity", test_merge_same_granularity },
  { "merge across granularities", test_merge_granularities },
  { "resize", test_resize },
  { "compact: same reads, write thaws", test_compact_reads },
  { "compact: changing calls", test_compact_changes },
  { "copy", test_copy },
  { "raw layout", test_raw_layout },
  { "sha256 vectors", test_sha256_vectors },
  { "sha256 of raw", test_sha256_random },
  { "serialize round trip", test_serialize_roundtrip },
  { "serialize truncated", test_serialize_truncated },
  { "serialize corrupted", test_serialize_corrupt },
  { "serialize crafted", test_serialize_crafted },
  { "memory: clean", test_memory_clean },
  { "memory: fully dirty", test_memory_full },
  { "memory: compact sparse", test_memory_compact_sparse },
  { "memory: 1000 checkpoints", test_memory_checkpoints },
  { "random ops vs reference", test_random_vs_reference },
  { "threads", test_threads },
};

int
main (void)
{
  const char *env;
  size_t i;
  unsigned passed = 0, failed = 0;

  env = getenv ("TEST_BITMAP_QUICK");
  quick = env && *env && strcmp (env, "0") != 0;
  env = getenv ("TEST_BITMAP_SEED");
  if (env && *env)
    seed = strtoull (env, NULL, 0) | 1;

  for (i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    if (tests[i].fn () == 0) {
      printf ("PASS: %s\n", tests[i].name);
      passed++;
    }
    else {
      printf ("FAIL: %s\n", tests[i].name);
      failed++;
    }
    fflush (stdout);
  }
  printf ("%u passed, %u failed\n", passed, failed);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
