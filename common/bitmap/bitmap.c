/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
#include <config.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

#include "bitmap.h"
#include "byteorder.h"
#include "cleanup.h"
#include "rounding.h"

/* The dirty bitmap (see bitmap.h).  Chunk i is bit i % 64 of word
 * i / 64, so the little-endian bytes of the words are QEMU's raw
 * layout.
 *
 * Pages of 4 KiB (32768 chunks): a 1 TiB disk at 64 KiB granularity
 * needs 512 of them when fully dirty (2 MiB) and a directory of only
 * 4 KiB when clean.
 */
#define PAGE_BYTES 4096
#define WORDS_PER_PAGE (PAGE_BYTES / sizeof (uint64_t))
#define ALL_ONES (~UINT64_C (0))

/* Serialised form, all integers little-endian:
 *   magic[8] version:u32 granularity:u32 size:u64 dirty_chunks:u64
 *   nr_runs:u64 nr_words:u64
 * then NR_RUNS runs of consecutive non-zero words, each
 *   first_word:u64 length:u64 word:u64[length]
 * Runs are non-empty, ascending and never adjacent, so that every
 * bitmap has exactly one encoding.
 */
#define SER_MAGIC "NCBITMAP"
#define SER_VERSION 1
#define SER_HEADER 48
#define SER_RUN_HEADER 16

/* One non-zero word of the compact form. */
struct cword {
  uint64_t idx;
  uint64_t word;
};

struct bitmap {
  uint64_t size;
  uint32_t granularity;
  unsigned shift;               /* log2 (granularity) */
  uint64_t nr_chunks;
  uint64_t nr_words;
  uint64_t nr_pages;            /* entries in dir */

  /* Paged form (NULL when compact).  Entries go from NULL to a page by
   * compare-and-swap and never back while setters may run.
   */
  uint64_t **dir;
  uint64_t pages_held;          /* atomic */
  uint64_t count;               /* atomic: dirty chunks */

  /* Compact form, used while COMPACT is true.  A setter that thaws the
   * bitmap leaves the array to readers that may still be walking it;
   * the next call with exclusive access frees it.
   */
  bool compact;                 /* atomic */
  struct cword *cwords;
  size_t nr_cwords;
  pthread_mutex_t thaw_lock;    /* serialises thawing setters */
};

static bool
is_compact (const struct bitmap *bm)
{
  return __atomic_load_n (&bm->compact, __ATOMIC_ACQUIRE);
}

/* Bits LO to HI of a word, inclusive (LO <= HI <= 63). */
static uint64_t
bit_mask (unsigned lo, unsigned hi)
{
  return (ALL_ONES << lo) & (ALL_ONES >> (63 - hi));
}

/* The bits of the last word that belong to chunks of the disk. */
static uint64_t
last_word_mask (const struct bitmap *bm)
{
  unsigned used = bm->nr_chunks % 64;

  return used ? bit_mask (0, used - 1) : ALL_ONES;
}

static void
set_geometry (struct bitmap *bm, uint64_t size)
{
  bm->size = size;
  /* Not DIV_ROUND_UP: SIZE + GRANULARITY may overflow. */
  bm->nr_chunks = (size >> bm->shift) + !IS_ALIGNED (size, bm->granularity);
  bm->nr_words = DIV_ROUND_UP (bm->nr_chunks, 64);
  bm->nr_pages = DIV_ROUND_UP (bm->nr_words, WORDS_PER_PAGE);
}

/* A directory of N clean entries in *DIRP (NULL when N is 0). */
static int
alloc_dir (uint64_t n, uint64_t ***dirp)
{
  *dirp = NULL;
  if (n == 0)
    return 0;
  if (n > SIZE_MAX / sizeof (uint64_t *)) {
    errno = ENOMEM;
    return -1;
  }
  *dirp = calloc (n, sizeof (uint64_t *));
  return *dirp ? 0 : -1;
}

/* Free the pages FROM to TO-1 of DIR; returns how many there were. */
static uint64_t
free_pages (uint64_t **dir, uint64_t from, uint64_t to)
{
  uint64_t p, n = 0;

  for (p = from; p < to; p++) {
    if (dir[p]) {
      free (dir[p]);
      dir[p] = NULL;
      n++;
    }
  }
  return n;
}

static uint64_t *
load_page (const struct bitmap *bm, uint64_t p)
{
  return __atomic_load_n (&bm->dir[p], __ATOMIC_ACQUIRE);
}

/* Page P of a paged bitmap, installed if missing; NULL on ENOMEM. */
static uint64_t *
get_page (struct bitmap *bm, uint64_t p)
{
  uint64_t *page = load_page (bm, p);
  uint64_t *installed = NULL;

  if (page)
    return page;
  page = calloc (1, PAGE_BYTES);
  if (page == NULL)
    return NULL;
  if (__atomic_compare_exchange_n (&bm->dir[p], &installed, page, false,
                                   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    __atomic_add_fetch (&bm->pages_held, 1, __ATOMIC_RELAXED);
    return page;
  }
  /* Another setter won the race: use its page. */
  free (page);
  return installed;
}

/* OR MASK into *WORD; returns how many bits were clear before. */
static unsigned
set_word (uint64_t *word, uint64_t mask)
{
  uint64_t old;

  /* Writes to chunks already dirty are the common case: a plain load
   * spares them a locked instruction and keeps the cache line shared.
   */
  if ((__atomic_load_n (word, __ATOMIC_RELAXED) & mask) == mask)
    return 0;
  old = __atomic_fetch_or (word, mask, __ATOMIC_ACQ_REL);
  return __builtin_popcountll (mask & ~old);
}

/* Word W |= WORD on a paged bitmap, keeping the count; returns the
 * number of new bits or -1 (ENOMEM).
 */
static int
or_word (struct bitmap *bm, uint64_t w, uint64_t word)
{
  uint64_t *page;
  unsigned n;

  if (word == 0)
    return 0;
  page = get_page (bm, w / WORDS_PER_PAGE);
  if (page == NULL)
    return -1;
  n = set_word (&page[w % WORDS_PER_PAGE], word);
  if (n)
    __atomic_add_fetch (&bm->count, n, __ATOMIC_RELAXED);
  return n;
}

/* Index of the first compact entry whose word index is >= W. */
static size_t
lower_bound (const struct bitmap *bm, uint64_t w)
{
  size_t lo = 0, hi = bm->nr_cwords;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;

    if (bm->cwords[mid].idx < w)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* Reads words of either form in ascending order of index. */
struct cursor {
  const struct bitmap *bm;
  bool compact;
  uint64_t w;                   /* where cursor_next looks next */
  uint64_t page_nr;             /* paged: the page cached in PAGE */
  const uint64_t *page;
  size_t i;                     /* compact: the next entry */
};

static void
cursor_init (struct cursor *c, const struct bitmap *bm, uint64_t w)
{
  c->bm = bm;
  c->compact = is_compact (bm);
  c->w = w;
  c->page_nr = UINT64_MAX;
  c->page = NULL;
  c->i = c->compact ? lower_bound (bm, w) : 0;
}

static const uint64_t *
cursor_page (struct cursor *c, uint64_t p)
{
  if (p != c->page_nr) {
    c->page_nr = p;
    c->page = load_page (c->bm, p);
  }
  return c->page;
}

/* Word W (0 past the end); W must not decrease from call to call. */
static uint64_t
cursor_load (struct cursor *c, uint64_t w)
{
  const struct bitmap *bm = c->bm;
  const uint64_t *page;

  if (w >= bm->nr_words)
    return 0;
  if (c->compact) {
    while (c->i < bm->nr_cwords && bm->cwords[c->i].idx < w)
      c->i++;
    if (c->i < bm->nr_cwords && bm->cwords[c->i].idx == w)
      return bm->cwords[c->i].word;
    return 0;
  }
  page = cursor_page (c, w / WORDS_PER_PAGE);
  return page ? __atomic_load_n (&page[w % WORDS_PER_PAGE],
                                 __ATOMIC_RELAXED) : 0;
}

/* The next non-zero word at or after the cursor and before word END,
 * skipping clean pages whole.  False when there is none.
 */
static bool
cursor_next (struct cursor *c, uint64_t end, uint64_t *w, uint64_t *word)
{
  const struct bitmap *bm = c->bm;

  end = MIN (end, bm->nr_words);
  if (c->compact) {
    while (c->i < bm->nr_cwords && bm->cwords[c->i].idx < c->w)
      c->i++;
    if (c->i == bm->nr_cwords || bm->cwords[c->i].idx >= end)
      return false;
    *w = bm->cwords[c->i].idx;
    *word = bm->cwords[c->i].word;
    c->w = *w + 1;
    return true;
  }
  while (c->w < end) {
    uint64_t p = c->w / WORDS_PER_PAGE;
    uint64_t page_end = MIN (end, (p + 1) * WORDS_PER_PAGE);
    const uint64_t *page = cursor_page (c, p);

    if (page == NULL) {
      c->w = page_end;
      continue;
    }
    for (; c->w < page_end; c->w++) {
      uint64_t v = __atomic_load_n (&page[c->w % WORDS_PER_PAGE],
                                    __ATOMIC_RELAXED);
      if (v) {
        *w = c->w++;
        *word = v;
        return true;
      }
    }
  }
  return false;
}

static uint64_t
popcount_all (const struct bitmap *bm)
{
  struct cursor c;
  uint64_t w, word, n = 0;

  cursor_init (&c, bm, 0);
  while (cursor_next (&c, bm->nr_words, &w, &word))
    n += __builtin_popcountll (word);
  return n;
}

/* Back to paged form under the lock, so that setters racing on a
 * compact bitmap thaw it once.  The compact array stays for readers.
 */
static int
thaw (struct bitmap *bm)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&bm->thaw_lock);
  uint64_t **dir;
  uint64_t held = 0;
  size_t i;

  if (!is_compact (bm))
    return 0;
  if (alloc_dir (bm->nr_pages, &dir) == -1)
    return -1;
  for (i = 0; i < bm->nr_cwords; i++) {
    uint64_t w = bm->cwords[i].idx;
    uint64_t **page = &dir[w / WORDS_PER_PAGE];

    if (*page == NULL) {
      *page = calloc (1, PAGE_BYTES);
      if (*page == NULL) {
        free_pages (dir, 0, bm->nr_pages);
        free (dir);
        return -1;
      }
      held++;
    }
    (*page)[w % WORDS_PER_PAGE] = bm->cwords[i].word;
  }
  bm->dir = dir;
  __atomic_store_n (&bm->pages_held, held, __ATOMIC_RELAXED);
  __atomic_store_n (&bm->compact, false, __ATOMIC_RELEASE);
  return 0;
}

/* Start of every changing call with exclusive access: paged form, and
 * no compact array left over from a thaw.
 */
static int
make_paged (struct bitmap *bm)
{
  if (is_compact (bm) && thaw (bm) == -1)
    return -1;
  free (bm->cwords);
  bm->cwords = NULL;
  bm->nr_cwords = 0;
  return 0;
}

struct bitmap *
bitmap_new (uint64_t size, uint32_t granularity)
{
  struct bitmap *bm;

  if (granularity < BITMAP_MIN_GRANULARITY ||
      granularity > BITMAP_MAX_GRANULARITY ||
      (granularity & (granularity - 1)) != 0) {
    errno = EINVAL;
    return NULL;
  }
  bm = calloc (1, sizeof *bm);
  if (bm == NULL)
    return NULL;
  bm->granularity = granularity;
  bm->shift = __builtin_ctz (granularity);
  set_geometry (bm, size);
  if (alloc_dir (bm->nr_pages, &bm->dir) == -1) {
    free (bm);
    return NULL;
  }
  pthread_mutex_init (&bm->thaw_lock, NULL);
  return bm;
}

void
bitmap_free (struct bitmap *bm)
{
  if (bm == NULL)
    return;
  if (bm->dir) {
    free_pages (bm->dir, 0, bm->nr_pages);
    free (bm->dir);
  }
  free (bm->cwords);
  pthread_mutex_destroy (&bm->thaw_lock);
  free (bm);
}

struct bitmap *
bitmap_copy (const struct bitmap *bm)
{
  struct bitmap *copy = bitmap_new (bm->size, bm->granularity);
  struct cursor c;
  uint64_t w, word;

  if (copy == NULL)
    return NULL;
  /* The count comes from the words copied, which a setter racing with
   * us may not have counted yet.
   */
  cursor_init (&c, bm, 0);
  while (cursor_next (&c, bm->nr_words, &w, &word)) {
    if (or_word (copy, w, word) == -1) {
      bitmap_free (copy);
      return NULL;
    }
  }
  return copy;
}

uint64_t
bitmap_size (const struct bitmap *bm)
{
  return bm->size;
}

uint32_t
bitmap_granularity (const struct bitmap *bm)
{
  return bm->granularity;
}

uint64_t
bitmap_nr_chunks (const struct bitmap *bm)
{
  return bm->nr_chunks;
}

/* The chunks *FIRST to *LAST that the byte range touches, clipped to
 * the disk; false when there are none.
 */
static bool
range_chunks (const struct bitmap *bm, uint64_t offset, uint64_t len,
              uint64_t *first, uint64_t *last)
{
  if (len == 0 || offset >= bm->size)
    return false;
  len = MIN (len, bm->size - offset);
  *first = offset >> bm->shift;
  *last = (offset + len - 1) >> bm->shift;
  return true;
}

/* Set the chunks FIRST to LAST of a paged bitmap; returns how many
 * were clean, or -1 (ENOMEM) with the chunks before the failure set
 * and counted.
 */
static int64_t
set_chunks (struct bitmap *bm, uint64_t first, uint64_t last)
{
  uint64_t wfirst = first / 64, wlast = last / 64, w = wfirst;
  int64_t added = 0;
  int r = 0;

  while (w <= wlast) {
    uint64_t p = w / WORDS_PER_PAGE;
    uint64_t end = MIN (wlast, (p + 1) * WORDS_PER_PAGE - 1);
    uint64_t *page = get_page (bm, p);

    if (page == NULL) {
      r = -1;
      break;
    }
    for (; w <= end; w++) {
      unsigned lo = w == wfirst ? first % 64 : 0;
      unsigned hi = w == wlast ? last % 64 : 63;

      added += set_word (&page[w % WORDS_PER_PAGE], bit_mask (lo, hi));
    }
  }
  if (added)
    __atomic_add_fetch (&bm->count, added, __ATOMIC_RELAXED);
  return r == -1 ? -1 : added;
}

int64_t
bitmap_set_range (struct bitmap *bm, uint64_t offset, uint64_t len)
{
  uint64_t first, last;

  if (!range_chunks (bm, offset, len, &first, &last))
    return 0;
  if (is_compact (bm) && thaw (bm) == -1)
    return -1;
  return set_chunks (bm, first, last);
}

static uint64_t
page_popcount (const uint64_t *page)
{
  uint64_t n = 0;
  size_t i;

  for (i = 0; i < WORDS_PER_PAGE; i++)
    n += __builtin_popcountll (page[i]);
  return n;
}

/* Clear chunks FIRST to LAST (exclusive access), freeing the pages
 * the range covers whole.
 */
static void
clear_chunks (struct bitmap *bm, uint64_t first, uint64_t last)
{
  uint64_t wfirst = first / 64, wlast = last / 64, w = wfirst;
  uint64_t cleared = 0;

  while (w <= wlast) {
    uint64_t p = w / WORDS_PER_PAGE;
    uint64_t start = p * WORDS_PER_PAGE;
    uint64_t end = MIN (wlast, start + WORDS_PER_PAGE - 1);
    uint64_t page_last =
      MIN ((start + WORDS_PER_PAGE) * 64, bm->nr_chunks) - 1;
    uint64_t *page = bm->dir[p];

    if (page && first <= start * 64 && last >= page_last) {
      cleared += page_popcount (page);
      free (page);
      bm->dir[p] = NULL;
      bm->pages_held--;
    }
    else if (page) {
      for (; w <= end; w++) {
        unsigned lo = w == wfirst ? first % 64 : 0;
        unsigned hi = w == wlast ? last % 64 : 63;
        uint64_t *word = &page[w % WORDS_PER_PAGE];

        cleared += __builtin_popcountll (*word & bit_mask (lo, hi));
        *word &= ~bit_mask (lo, hi);
      }
    }
    w = end + 1;
  }
  __atomic_sub_fetch (&bm->count, cleared, __ATOMIC_RELAXED);
}

int
bitmap_clear_range (struct bitmap *bm, uint64_t offset, uint64_t len)
{
  uint64_t first, last;

  if (!range_chunks (bm, offset, len, &first, &last))
    return 0;
  if (make_paged (bm) == -1)
    return -1;
  clear_chunks (bm, first, last);
  return 0;
}

void
bitmap_clear_all (struct bitmap *bm)
{
  /* An empty compact array is a clean bitmap: emptying it, rather than
   * thawing, cannot fail.
   */
  free (bm->cwords);
  bm->cwords = NULL;
  bm->nr_cwords = 0;
  if (!is_compact (bm)) {
    free_pages (bm->dir, 0, bm->nr_pages);
    bm->pages_held = 0;
  }
  bm->count = 0;
}

bool
bitmap_test (const struct bitmap *bm, uint64_t offset)
{
  struct cursor c;
  uint64_t chunk;

  if (offset >= bm->size)
    return false;
  chunk = offset >> bm->shift;
  cursor_init (&c, bm, chunk / 64);
  return (cursor_load (&c, chunk / 64) >> (chunk % 64)) & 1;
}

/* The first dirty chunk at or after CHUNK, or nr_chunks. */
static uint64_t
find_dirty_chunk (const struct bitmap *bm, uint64_t chunk)
{
  struct cursor c;
  uint64_t w = chunk / 64;
  uint64_t word;

  cursor_init (&c, bm, w);
  word = cursor_load (&c, w) & (ALL_ONES << (chunk % 64));
  if (word == 0) {
    c.w = w + 1;
    if (!cursor_next (&c, bm->nr_words, &w, &word))
      return bm->nr_chunks;
  }
  return MIN (w * 64 + __builtin_ctzll (word), bm->nr_chunks);
}

/* The first clean chunk at or after CHUNK, or nr_chunks.  Words past
 * the end read as clean, hence the clip.
 */
static uint64_t
find_clean_chunk (const struct bitmap *bm, uint64_t chunk)
{
  struct cursor c;
  uint64_t w = chunk / 64;
  uint64_t clean;

  cursor_init (&c, bm, w);
  clean = ~cursor_load (&c, w) & (ALL_ONES << (chunk % 64));
  while (clean == 0 && ++w < bm->nr_words)
    clean = ~cursor_load (&c, w);
  if (clean == 0)
    return bm->nr_chunks;
  return MIN (w * 64 + __builtin_ctzll (clean), bm->nr_chunks);
}

bool
bitmap_any_dirty (const struct bitmap *bm, uint64_t offset, uint64_t len)
{
  uint64_t first, last;

  if (!range_chunks (bm, offset, len, &first, &last))
    return false;
  return find_dirty_chunk (bm, first) <= last;
}

/* False for a range with no chunk in the disk, like bitmap_test. */
bool
bitmap_all_dirty (const struct bitmap *bm, uint64_t offset, uint64_t len)
{
  uint64_t first, last;

  if (!range_chunks (bm, offset, len, &first, &last))
    return false;
  return find_clean_chunk (bm, first) > last;
}

/* Mark the chunks of DST that each extent of SRC overlaps, SRC's last
 * chunk counting only up to SRC's size.
 */
static int
merge_extents (struct bitmap *dst, const struct bitmap *src)
{
  uint64_t chunk = 0;

  while (chunk < src->nr_chunks) {
    uint64_t dirty = find_dirty_chunk (src, chunk);
    uint64_t start, end;

    if (dirty >= src->nr_chunks)
      break;
    chunk = find_clean_chunk (src, dirty);
    start = dirty << src->shift;
    end = chunk >= src->nr_chunks ? src->size : chunk << src->shift;
    if (start >= dst->size)
      break;
    if (bitmap_set_range (dst, start, end - start) == -1)
      return -1;
  }
  return 0;
}

/* Same granularity: the chunks line up, so OR word by word. */
static int
merge_words (struct bitmap *dst, const struct bitmap *src)
{
  struct cursor c;
  uint64_t w, word;

  cursor_init (&c, src, 0);
  while (cursor_next (&c, dst->nr_words, &w, &word)) {
    if (w == dst->nr_words - 1)
      word &= last_word_mask (dst);
    if (or_word (dst, w, word) == -1)
      return -1;
  }
  return 0;
}

int
bitmap_merge (struct bitmap *dst, const struct bitmap *src)
{
  if (make_paged (dst) == -1)
    return -1;
  if (dst->granularity == src->granularity)
    return merge_words (dst, src);
  return merge_extents (dst, src);
}

uint64_t
bitmap_count_chunks (const struct bitmap *bm)
{
  return __atomic_load_n (&bm->count, __ATOMIC_RELAXED);
}

uint64_t
bitmap_count_bytes (const struct bitmap *bm)
{
  uint64_t chunks = bitmap_count_chunks (bm);
  uint64_t tail = bm->size & (bm->granularity - 1);
  /* May wrap for a disk of nearly 2^64 bytes; the clip below brings
   * it back in range.
   */
  uint64_t bytes = chunks << bm->shift;

  /* The last chunk holds only TAIL bytes.  A racing setter may have set
   * its bit but not counted it yet, hence the check on CHUNKS.
   */
  if (tail && chunks > 0 && bitmap_test (bm, bm->size - 1))
    bytes -= bm->granularity - tail;
  return bytes;
}

bool
bitmap_find (const struct bitmap *bm, uint64_t offset, bool dirty,
             uint64_t *found)
{
  uint64_t chunk, match;

  if (offset >= bm->size)
    return false;
  chunk = offset >> bm->shift;
  match = dirty ? find_dirty_chunk (bm, chunk) : find_clean_chunk (bm, chunk);
  if (match >= bm->nr_chunks)
    return false;
  *found = match == chunk ? offset : match << bm->shift;
  return true;
}

uint64_t
bitmap_run_end (const struct bitmap *bm, uint64_t offset, uint64_t limit)
{
  uint64_t found;

  if (bm == NULL ||
      !bitmap_find (bm, offset, !bitmap_test (bm, offset), &found) ||
      found > limit)
    return limit;
  return found;
}

/* After shrinking: clear the bits past the new last chunk that the
 * kept pages still hold.
 */
static void
clear_tail (struct bitmap *bm)
{
  uint64_t w = bm->nr_words;
  uint64_t end = bm->nr_pages * WORDS_PER_PAGE;
  uint64_t *page;

  if (bm->nr_chunks % 64) {
    page = bm->dir[(w - 1) / WORDS_PER_PAGE];
    if (page)
      page[(w - 1) % WORDS_PER_PAGE] &= last_word_mask (bm);
  }
  if (w < end) {
    page = bm->dir[w / WORDS_PER_PAGE];
    if (page)
      memset (&page[w % WORDS_PER_PAGE], 0, (end - w) * sizeof *page);
  }
}

int
bitmap_resize (struct bitmap *bm, uint64_t new_size)
{
  uint64_t old_size = bm->size, old_pages = bm->nr_pages;
  uint64_t **dir;

  if (make_paged (bm) == -1)
    return -1;
  set_geometry (bm, new_size);
  if (bm->nr_pages > old_pages) {
    if (bm->nr_pages > SIZE_MAX / sizeof *dir ||
        (dir = realloc (bm->dir, bm->nr_pages * sizeof *dir)) == NULL) {
      set_geometry (bm, old_size);
      errno = ENOMEM;
      return -1;
    }
    memset (&dir[old_pages], 0, (bm->nr_pages - old_pages) * sizeof *dir);
    bm->dir = dir;
  }
  else if (bm->nr_pages < old_pages) {
    bm->pages_held -= free_pages (bm->dir, bm->nr_pages, old_pages);
    if (bm->nr_pages == 0) {
      free (bm->dir);
      bm->dir = NULL;
    }
    /* If shrinking the directory fails, the larger one does no harm. */
    else if ((dir = realloc (bm->dir, bm->nr_pages * sizeof *dir)) != NULL)
      bm->dir = dir;
  }
  if (new_size < old_size) {
    clear_tail (bm);
    bm->count = popcount_all (bm);
  }
  return 0;
}

int
bitmap_compact (struct bitmap *bm)
{
  struct cursor c;
  struct cword *cwords = NULL;
  uint64_t w, word;
  size_t n = 0, i = 0;

  if (is_compact (bm))
    return 0;
  cursor_init (&c, bm, 0);
  while (cursor_next (&c, bm->nr_words, &w, &word))
    n++;
  if (n > 0) {
    cwords = malloc (n * sizeof *cwords);
    if (cwords == NULL)
      return -1;
  }
  cursor_init (&c, bm, 0);
  while (i < n && cursor_next (&c, bm->nr_words, &w, &word)) {
    cwords[i].idx = w;
    cwords[i].word = word;
    i++;
  }

  if (bm->dir) {
    free_pages (bm->dir, 0, bm->nr_pages);
    free (bm->dir);
    bm->dir = NULL;
  }
  bm->pages_held = 0;
  free (bm->cwords);
  bm->cwords = cwords;
  bm->nr_cwords = n;
  __atomic_store_n (&bm->compact, true, __ATOMIC_RELEASE);
  return 0;
}

size_t
bitmap_memory (const struct bitmap *bm)
{
  size_t bytes = sizeof *bm + bm->nr_cwords * sizeof (struct cword);

  if (!is_compact (bm) && bm->dir)
    bytes += bm->nr_pages * sizeof (uint64_t *) +
      __atomic_load_n (&bm->pages_held, __ATOMIC_RELAXED) * PAGE_BYTES;
  return bytes;
}

uint64_t
bitmap_raw_length (const struct bitmap *bm)
{
  return bm->nr_words * sizeof (uint64_t);
}

void
bitmap_raw_read (const struct bitmap *bm, uint64_t start, size_t len,
                 unsigned char *out)
{
  uint64_t raw_len = bitmap_raw_length (bm);
  uint64_t end, w, word;
  struct cursor c;
  unsigned k;

  memset (out, 0, len);
  if (start >= raw_len)
    return;
  end = start + MIN (len, raw_len - start);
  cursor_init (&c, bm, start / 8);
  while (cursor_next (&c, DIV_ROUND_UP (end, 8), &w, &word)) {
    for (k = 0; k < 8; k++) {
      uint64_t pos = w * 8 + k;

      if (pos >= start && pos < end)
        out[pos - start] = word >> (8 * k);
    }
  }
}

int
bitmap_sha256 (const struct bitmap *bm, char hex[65])
{
  static const char digits[] = "0123456789abcdef";
  uint64_t raw_len = bitmap_raw_length (bm), pos;
  unsigned char block[PAGE_BYTES];
  unsigned char digest[32];
  gnutls_hash_hd_t hash;
  size_t i;

  if (gnutls_hash_init (&hash, GNUTLS_DIG_SHA256) < 0) {
    errno = ENOMEM;
    return -1;
  }
  /* One page of the raw layout at a time (zeros for clean pages), so
   * that a huge disk needs no huge buffer.
   */
  for (pos = 0; pos < raw_len; pos += sizeof block) {
    size_t n = MIN (raw_len - pos, sizeof block);

    bitmap_raw_read (bm, pos, n, block);
    if (gnutls_hash (hash, block, n) < 0) {
      gnutls_hash_deinit (hash, NULL);
      errno = ENOMEM;
      return -1;
    }
  }
  gnutls_hash_deinit (hash, digest);
  for (i = 0; i < sizeof digest; i++) {
    hex[2 * i] = digits[digest[i] >> 4];
    hex[2 * i + 1] = digits[digest[i] & 15];
  }
  hex[64] = '\0';
  return 0;
}

/* A growing output buffer. */
struct outbuf {
  unsigned char *p;
  size_t len, cap;
};

static int
out_reserve (struct outbuf *o, size_t n)
{
  unsigned char *p;
  size_t cap = o->cap;

  while (cap - o->len < n) {
    if (cap > SIZE_MAX / 2) {
      errno = ENOMEM;
      return -1;
    }
    cap *= 2;
  }
  if (cap == o->cap)
    return 0;
  p = realloc (o->p, cap);
  if (p == NULL)
    return -1;
  o->p = p;
  o->cap = cap;
  return 0;
}

/* One pass over the words, so that a setter racing with us cannot make
 * the counts disagree with the runs written.
 */
int
bitmap_serialize (const struct bitmap *bm, void **bufp, size_t *lenp)
{
  struct outbuf o = { .len = SER_HEADER, .cap = SER_HEADER + PAGE_BYTES };
  uint64_t nr_runs = 0, nr_words = 0, count = 0, run_len = 0;
  uint64_t next = UINT64_MAX;   /* the word that would extend the run */
  size_t run = 0;               /* offset of the current run's header */
  uint64_t w, word;
  struct cursor c;
  unsigned char *p;

  o.p = malloc (o.cap);
  if (o.p == NULL)
    return -1;
  cursor_init (&c, bm, 0);
  while (cursor_next (&c, bm->nr_words, &w, &word)) {
    if (out_reserve (&o, SER_RUN_HEADER + 8) == -1) {
      free (o.p);
      return -1;
    }
    if (w != next) {
      run = o.len;
      run_len = 0;
      nr_runs++;
      le_store (o.p + run, w, 8);
      o.len += SER_RUN_HEADER;
    }
    le_store (o.p + run + 8, ++run_len, 8);
    le_store (o.p + o.len, word, 8);
    o.len += 8;
    next = w + 1;
    nr_words++;
    count += __builtin_popcountll (word);
  }

  memcpy (o.p, SER_MAGIC, 8);
  le_store (o.p + 8, SER_VERSION, 4);
  le_store (o.p + 12, bm->granularity, 4);
  le_store (o.p + 16, bm->size, 8);
  le_store (o.p + 24, count, 8);
  le_store (o.p + 32, nr_runs, 8);
  le_store (o.p + 40, nr_words, 8);
  /* Give back the slack; if that fails, the larger buffer will do. */
  p = realloc (o.p, o.len);
  *bufp = p ? p : o.p;
  *lenp = o.len;
  return 0;
}

/* Load NR_RUNS runs from [P, END) into a new paged bitmap, checking
 * each against the buffer and the disk.  -1 with errno on error.
 */
static int
load_runs (struct bitmap *bm, const unsigned char *p, const unsigned char *end,
           uint64_t nr_runs)
{
  uint64_t next = 0;            /* lowest word a run may start at */
  uint64_t r, i;

  for (r = 0; r < nr_runs; r++) {
    uint64_t first, n;

    if (end - p < SER_RUN_HEADER)
      goto invalid;
    first = le_load (p, 8);
    n = le_load (p + 8, 8);
    p += SER_RUN_HEADER;
    if (n == 0 || first < next || first >= bm->nr_words ||
        n > bm->nr_words - first || n > (uint64_t) (end - p) / 8)
      goto invalid;
    for (i = 0; i < n; i++, p += 8) {
      uint64_t word = le_load (p, 8);

      if (word == 0 ||
          (first + i == bm->nr_words - 1 && (word & ~last_word_mask (bm))))
        goto invalid;
      if (or_word (bm, first + i, word) == -1)
        return -1;
    }
    /* Adjacent runs would have been written as one. */
    next = first + n + 1;
  }
  if (p != end)
    goto invalid;
  return 0;

 invalid:
  errno = EINVAL;
  return -1;
}

/* WANT: the size and granularity the buffer must have, checked before
 * anything is allocated (NULL: any).
 */
static struct bitmap *
deserialize (const void *buf, size_t len, const uint64_t *want_size,
             const uint32_t *want_granularity)
{
  const unsigned char *p = buf;
  uint64_t size, count, nr_runs, nr_words;
  uint32_t granularity;
  struct bitmap *bm;
  size_t avail;

  if (len < SER_HEADER || memcmp (p, SER_MAGIC, 8) != 0 ||
      le_load (p + 8, 4) != SER_VERSION)
    goto invalid;
  granularity = le_load (p + 12, 4);
  size = le_load (p + 16, 8);
  if ((want_size && size != *want_size) ||
      (want_granularity && granularity != *want_granularity))
    goto invalid;
  count = le_load (p + 24, 8);
  nr_runs = le_load (p + 32, 8);
  nr_words = le_load (p + 40, 8);

  /* The counts must describe exactly LEN bytes; no overflow here. */
  avail = len - SER_HEADER;
  if (nr_runs > avail / SER_RUN_HEADER ||
      nr_words > (avail - nr_runs * SER_RUN_HEADER) / 8 ||
      nr_runs * SER_RUN_HEADER + nr_words * 8 != avail)
    goto invalid;

  bm = bitmap_new (size, granularity);
  if (bm == NULL)
    return NULL;
  if (load_runs (bm, p + SER_HEADER, p + len, nr_runs) == -1) {
    int saved = errno;

    bitmap_free (bm);
    errno = saved;
    return NULL;
  }
  if (bm->count != count) {
    bitmap_free (bm);
    goto invalid;
  }
  return bm;

 invalid:
  errno = EINVAL;
  return NULL;
}

struct bitmap *
bitmap_deserialize (const void *buf, size_t len)
{
  return deserialize (buf, len, NULL, NULL);
}

struct bitmap *
bitmap_deserialize_as (const void *buf, size_t len, uint64_t size,
                       uint32_t granularity)
{
  return deserialize (buf, len, &size, &granularity);
}
