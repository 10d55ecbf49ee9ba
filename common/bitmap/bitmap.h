/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The dirty bitmap: one bit per chunk of GRANULARITY bytes of a disk.
 *
 * Memory grows with dirty data, in two forms:
 *
 * - paged (the form any bitmap starts in): a directory of pointers to
 *   fixed-size pages of bits.  A NULL page is all clean, so a clean
 *   bitmap costs only its directory.  Marking is lock-free: pages are
 *   installed with compare-and-swap and bits set with atomic OR, so the
 *   write path of many threads never takes a lock.
 *
 * - compact: a sorted array of (word index, 64-bit word) pairs holding
 *   only the non-zero words.  bitmap_compact () converts a bitmap that
 *   no longer records (an old checkpoint's bitmap) into this form; it
 *   then costs 16 bytes per dirty word.  Any call that changes a
 *   compact bitmap converts it back to paged form first.
 *
 * Concurrency: bitmap_set_range may run in any number of threads at
 * once, together with the read-only calls (test, find, count, export).
 * Every other changing call (clear, merge into, resize, compact,
 * deserialise, free) needs exclusive access: the caller holds its own
 * lock that keeps writers out.
 *
 * Offsets and lengths are in bytes of the disk.  A range touches every
 * chunk it overlaps, unaligned edges included.  Bits for chunks past
 * the disk size are never set.
 *
 * Returned errors set errno (ENOMEM, EINVAL); no call prints anything.
 */
#ifndef NC_BITMAP_H
#define NC_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bitmap;

#define BITMAP_MIN_GRANULARITY 512
#define BITMAP_MAX_GRANULARITY (UINT32_C (1) << 31)

/* SIZE: the disk size in bytes.  GRANULARITY: a power of two between
 * the limits above.  NULL and errno on error.
 */
extern struct bitmap *bitmap_new (uint64_t size, uint32_t granularity);
extern void bitmap_free (struct bitmap *bm);
/* A deep copy in paged form; NULL and errno on error. */
extern struct bitmap *bitmap_copy (const struct bitmap *bm);

extern uint64_t bitmap_size (const struct bitmap *bm);
extern uint32_t bitmap_granularity (const struct bitmap *bm);
/* Number of chunks: the disk size divided by the granularity, rounded up. */
extern uint64_t bitmap_nr_chunks (const struct bitmap *bm);

/* Mark every chunk that [OFFSET, OFFSET+LEN) touches (clipped to the
 * disk size).  Thread-safe against other setters and readers.
 * Returns the number of chunks that were clean before, or -1 (ENOMEM).
 */
extern int64_t bitmap_set_range (struct bitmap *bm,
                                 uint64_t offset, uint64_t len);
/* Clear every chunk that the range touches, or the whole bitmap. */
extern int bitmap_clear_range (struct bitmap *bm,
                               uint64_t offset, uint64_t len);
extern void bitmap_clear_all (struct bitmap *bm);

/* Is the chunk holding OFFSET dirty?  False past the disk size. */
extern bool bitmap_test (const struct bitmap *bm, uint64_t offset);
/* Is any chunk, resp. is every chunk, that the range touches dirty? */
extern bool bitmap_any_dirty (const struct bitmap *bm,
                              uint64_t offset, uint64_t len);
extern bool bitmap_all_dirty (const struct bitmap *bm,
                              uint64_t offset, uint64_t len);

/* DST |= SRC.  The granularities may differ: each dirty chunk of SRC
 * marks every chunk of DST it overlaps.  The sizes may differ: SRC's
 * chunks past DST's size are ignored.  -1 (ENOMEM) on error, and then
 * DST may hold some of SRC's bits (never fewer than before).
 */
extern int bitmap_merge (struct bitmap *dst, const struct bitmap *src);

/* Dirty chunks, and dirty bytes: dirty chunks times the granularity,
 * the last chunk clipped to the disk size (a checkpoint's "size";
 * QEMU's "count" is the chunks times the granularity, unclipped).
 */
extern uint64_t bitmap_count_chunks (const struct bitmap *bm);
extern uint64_t bitmap_count_bytes (const struct bitmap *bm);

/* The first chunk at or after the chunk holding OFFSET whose state is
 * DIRTY.  Returns true and its byte offset (chunk-aligned, or OFFSET
 * itself when OFFSET's own chunk matches) in *FOUND; false when there
 * is none before the disk size.  Skips clean pages and words fast.
 * Alternating calls with dirty=true and dirty=false walk the extents.
 */
extern bool bitmap_find (const struct bitmap *bm, uint64_t offset,
                         bool dirty, uint64_t *found);

/* The end of the run of chunks from OFFSET that are all in the state
 * of OFFSET's own chunk, capped at LIMIT (also when BM is NULL).
 */
extern uint64_t bitmap_run_end (const struct bitmap *bm, uint64_t offset,
                                uint64_t limit);

/* Grow or shrink to NEW_SIZE bytes.  New chunks are clean; chunks past
 * the new size are dropped.  Exclusive access.  -1 (ENOMEM) on error.
 */
extern int bitmap_resize (struct bitmap *bm, uint64_t new_size);

/* Convert to the compact form (see above).  -1 (ENOMEM) on error, and
 * the bitmap is unchanged.
 */
extern int bitmap_compact (struct bitmap *bm);
/* Bytes of heap that the bitmap holds now (for tests and benchmarks). */
extern size_t bitmap_memory (const struct bitmap *bm);

/* QEMU's raw layout: bit i of the bitmap (chunk i) is bit i%8 of byte
 * i/8, and the array is padded with zero bytes to a multiple of 8
 * bytes; bitmap_raw_length gives that padded length.  Copies LEN bytes
 * from byte offset START of that layout into OUT (zero for clean
 * pages).
 */
extern uint64_t bitmap_raw_length (const struct bitmap *bm);
extern void bitmap_raw_read (const struct bitmap *bm, uint64_t start,
                             size_t len, unsigned char *out);
/* SHA-256 of the whole raw layout as 64 lower-case hex digits and a
 * NUL: x-debug-block-dirty-bitmap-sha256 as QEMU 7.2 computes it.
 */
extern int bitmap_sha256 (const struct bitmap *bm, char hex[65]);

/* Serialise to a self-describing buffer (size, granularity, and only
 * the non-zero words), so that a clean or sparse bitmap stays small.
 * Integrity (checksums) is the caller's job.  *BUF is malloc'ed.
 */
extern int bitmap_serialize (const struct bitmap *bm,
                             void **buf, size_t *len);
/* NULL and errno = EINVAL for a malformed buffer (never reads past
 * LEN, never trusts a count from the buffer), ENOMEM.
 */
extern struct bitmap *bitmap_deserialize (const void *buf, size_t len);
/* The same, and EINVAL unless the buffer is for SIZE bytes at
 * GRANULARITY: checked before allocating, so that a file claiming a
 * huge disk costs nothing (found by fuzz/fuzz-persist).
 */
extern struct bitmap *bitmap_deserialize_as (const void *buf, size_t len,
                                             uint64_t size,
                                             uint32_t granularity);

#endif /* NC_BITMAP_H */
