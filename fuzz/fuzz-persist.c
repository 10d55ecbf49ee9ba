/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* libFuzzer target: the checkpoint filter's state payload decoders
 * (filters/checkpoint/engines/persist-load.c and the checkpoints file
 * of persist.c): the checkpoints file, node.NODE's bitmap records, the
 * bits files and, for a node not saved cleanly, its journal.  The
 * filter's core is linked in without nbdkit (as core/test-core is),
 * with persistence in crash-safety=process mode, or the mode
 * FUZZ_CRASH_SAFETY names (process, power or none: one per run, as the
 * filter's subscriptions are made once).
 *
 * Input: a flags byte, then files, each a selector byte, a 2-byte
 * little-endian length and that many bytes (cut at the end):
 *   selector & 0x7f, modulo 5:
 *     0  checkpoints
 *     1  node.d0
 *     2  journal.d0 (its header's SHA-256 made right unless raw)
 *     3  bitmap.d0.I, I the first byte modulo 8, the rest its bits
 *     4  bitmap.d0.HASH: a length byte and a bitmap name, the rest its
 *        bits (HASH is computed from the name, as for stable names)
 *   selector & 0x80: written raw; otherwise wrapped in a valid state
 *   file header (common/state) so that the payload decoders are
 *   reached past the checksums.
 * flags & 1: disk d0 is 1 MiB whatever node.d0 says; otherwise it has
 * the size node.d0 begins with (if at most MAX_SIZE).
 *
 * Then the checkpoints are loaded and disk d0 added (its bitmaps are
 * loaded).  What loads must be coherent (see check_node), and save
 * cleanly and load back the same (the disk removed and added again),
 * and everything is freed (leaks are reported by ASan).
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

#include "bitmap.h"
#include "state.h"
#include "core/bitmap-ops.h"
#include "core/checkpoint-chain.h"
#include "core/node.h"
#include "engines/persist.h"
#include "engines/persist-format.h"

#define NODE "d0"
#define MAX_SIZE (UINT64_C (64) << 20)
#define DEFAULT_SIZE (UINT64_C (1) << 20)

static char dir[256];
static bool verbose;

/* nbdkit's logging, which the filter's engines call. */
static void
log_msg (const char *what, const char *fs, va_list args)
{
  char buf[4096];

  vsnprintf (buf, sizeof buf, fs, args);
  if (verbose)
    fprintf (stderr, "%s: %s\n", what, buf);
}

void
nbdkit_error (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  log_msg ("error", fs, args);
  va_end (args);
}

void
nbdkit_debug (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  log_msg ("debug", fs, args);
  va_end (args);
}

static void
clear_dir (void)
{
  DIR *d = opendir (dir);
  struct dirent *e;
  char path[600];

  if (d == NULL)
    abort ();
  while ((e = readdir (d)) != NULL) {
    if (strcmp (e->d_name, ".") == 0 || strcmp (e->d_name, "..") == 0)
      continue;
    snprintf (path, sizeof path, "%s/%s", dir, e->d_name);
    if (unlink (path) == -1)
      abort ();
  }
  closedir (d);
}

static void
cleanup (void)
{
  clear_dir ();
  rmdir (dir);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  const char *t = getenv ("TMPDIR");
  const char *m = getenv ("FUZZ_CRASH_SAFETY");
  enum crash_safety mode = CRASH_SAFETY_PROCESS;

  if (m && strcmp (m, "none") == 0)
    mode = CRASH_SAFETY_NONE;
  else if (m && strcmp (m, "power") == 0)
    mode = CRASH_SAFETY_POWER;
  else if (m && strcmp (m, "process") != 0) {
    fprintf (stderr, "FUZZ_CRASH_SAFETY=%s: process, power or none\n", m);
    exit (EXIT_FAILURE);
  }
  verbose = getenv ("FUZZ_VERBOSE") != NULL;
  snprintf (dir, sizeof dir, "%s/fuzz-persist-XXXXXX", t && *t ? t : "/tmp");
  if (mkdtemp (dir) == NULL) {
    perror (dir);
    exit (EXIT_FAILURE);
  }
  atexit (cleanup);
  if (persist_start (dir, mode) == -1)
    exit (EXIT_FAILURE);
  return 0;
}

static void
put_raw (const char *name, const uint8_t *data, size_t size)
{
  char path[600];
  int fd;

  snprintf (path, sizeof path, "%s/%s", dir, name);
  fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd == -1 || (size && write (fd, data, size) != (ssize_t) size) ||
      close (fd) == -1) {
    perror (path);
    abort ();
  }
}

static void
put_file (const char *name, uint32_t kind, bool raw,
          const uint8_t *data, size_t size)
{
  if (raw)
    put_raw (name, data, size);
  else if (state_write_flags (dir, name, kind, data, size,
                              STATE_NO_SYNC) == -1) {
    perror (name);
    abort ();
  }
}

/* A journal with its header's checksum made right (if it fits). */
static void
put_journal (bool raw, const uint8_t *data, size_t size)
{
  uint8_t *copy = malloc (size ? size : 1);
  uint64_t hdr_len;

  if (copy == NULL)
    abort ();
  memcpy (copy, data, size);
  if (!raw && size >= 12) {
    hdr_len = 12 + (copy[8] | (copy[9] << 8) | (copy[10] << 16) |
                     ((uint64_t) copy[11] << 24));
    if (hdr_len + 32 <= size &&
        gnutls_hash_fast (GNUTLS_DIG_SHA256, copy, hdr_len,
                          copy + hdr_len) < 0)
      abort ();
  }
  put_raw ("journal." NODE, copy, size);
  free (copy);
}

/* bitmap.d0.HASH: a length byte, the name, then the bits. */
static void
put_stable_bits (bool raw, const uint8_t *data, size_t size)
{
  struct node fake = { .name = (char *) NODE };
  char *name, *file;
  size_t l;

  if (size == 0)
    return;
  l = data[0] < size ? data[0] : size - 1;
  name = strndup ((const char *) data + 1, l);
  if (name == NULL || (file = persist_bits_file (&fake, name, 0, true)) == NULL)
    abort ();
  put_file (file, KIND_BITMAP, raw, data + 1 + l, size - 1 - l);
  free (file);
  free (name);
}

/* Write the input's files; the size disk d0 is to have. */
static uint64_t
put_files (const uint8_t *data, size_t size)
{
  uint64_t disk_size = DEFAULT_SIZE, s = 0;
  bool fixed = size > 0 && (data[0] & 1);
  char name[32];
  size_t len, i;

  if (size == 0)
    return disk_size;
  data++, size--;
  while (size >= 3) {
    uint8_t sel = data[0];
    bool raw = sel & 0x80;

    len = data[1] | (data[2] << 8);
    data += 3, size -= 3;
    if (len > size)
      len = size;
    switch ((sel & 0x7f) % 5) {
    case 0:
      put_file ("checkpoints", KIND_CHECKPOINTS, raw, data, len);
      break;
    case 1:
      put_file ("node." NODE, KIND_NODE, raw, data, len);
      if (len >= 8 && !fixed) {
        for (s = 0, i = 0; i < 8; i++)
          s |= (uint64_t) data[i] << (8 * i);
        if (s <= MAX_SIZE)
          disk_size = s;
      }
      break;
    case 2:
      put_journal (raw, data, len);
      break;
    case 3:
      if (len > 0) {
        snprintf (name, sizeof name, "bitmap." NODE ".%u", data[0] % 8);
        put_file (name, KIND_BITMAP, raw, data + 1, len - 1);
      }
      break;
    case 4:
      put_stable_bits (raw, data, len);
      break;
    }
    data += len, size -= len;
  }
  return disk_size;
}

/* What a loaded bitmap is, to compare after saving and loading back. */
struct seen {
  char *name;
  bool recording, checkpoint, inconsistent;
  uint32_t granularity;
  char sum[65];
};

static void
check_checkpoints (void)
{
  struct checkpoint *c, *o;

  for (c = checkpoints_list (); c; c = c->next) {
    if (c->name == NULL)
      abort ();
    for (o = c->next; o; o = o->next)
      if (strcmp (o->name, c->name) == 0) {
        fprintf (stderr, "two checkpoints named '%s'\n", c->name);
        abort ();
      }
  }
}

/* Every bitmap has bits over the whole disk and a unique name; a
 * checkpoint's bitmap has its checkpoint.  Returns how many, in *SEEN
 * (malloc'ed).
 */
static size_t
check_node (struct node *n, struct seen **seenp)
{
  struct dirty_bitmap *d, *o;
  struct seen *seen;
  size_t nr = 0;

  for (d = n->bitmaps; d; d = d->next)
    nr++;
  *seenp = seen = calloc (nr + 1, sizeof *seen);
  if (seen == NULL)
    abort ();
  nr = 0;
  for (d = n->bitmaps; d; d = d->next) {
    if (d->name == NULL || d->bm == NULL ||
        bitmap_size (d->bm) != n->size || !d->persistent)
      abort ();
    if (d->checkpoint && checkpoints_find (d->name) == NULL) {
      fprintf (stderr, "bitmap '%s' of a checkpoint that is not there\n",
               d->name);
      abort ();
    }
    for (o = d->next; o; o = o->next)
      if (strcmp (o->name, d->name) == 0) {
        fprintf (stderr, "two bitmaps named '%s' on one node\n", d->name);
        abort ();
      }
    seen[nr].name = strdup (d->name);
    seen[nr].recording = d->recording;
    seen[nr].checkpoint = d->checkpoint;
    seen[nr].inconsistent = d->inconsistent;
    seen[nr].granularity = bitmap_granularity (d->bm);
    if (seen[nr].name == NULL || bitmap_sha256 (d->bm, seen[nr].sum) == -1)
      abort ();
    nr++;
  }
  return nr;
}

static void
same_node (struct node *n, const struct seen *seen, size_t nr)
{
  struct seen *again;
  size_t k, i;

  k = check_node (n, &again);
  if (k != nr)
    abort ();
  for (i = 0; i < nr; i++) {
    if (strcmp (again[i].name, seen[i].name) != 0 ||
        again[i].recording != seen[i].recording ||
        again[i].checkpoint != seen[i].checkpoint ||
        again[i].inconsistent != seen[i].inconsistent ||
        again[i].granularity != seen[i].granularity ||
        (!seen[i].inconsistent &&
         strcmp (again[i].sum, seen[i].sum) != 0)) {
      fprintf (stderr, "bitmap '%s' changed when saved and loaded back\n",
               seen[i].name);
      abort ();
    }
    free (again[i].name);
  }
  free (again);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct qmp_error err = { NULL };
  struct seen *seen = NULL;
  uint64_t disk_size;
  struct node *n;
  size_t nr = 0, i;

  disk_size = put_files (data, size);
  persist_load_checkpoints ();
  check_checkpoints ();
  n = nodes_add (NODE, disk_size, &err);
  if (n == NULL) {
    if (err.class == NULL)
      abort ();                 /* refused without a reason */
    qmp_error_clear (&err);
  }
  else {
    nr = check_node (n, &seen);
    nodes_remove (n);           /* saved cleanly */
    n = nodes_add (NODE, disk_size, &err);
    if (n == NULL) {
      fprintf (stderr, "saved cleanly, refused: %s\n", err.desc);
      abort ();
    }
    same_node (n, seen, nr);
    nodes_remove (n);
  }
  for (i = 0; i < nr; i++)
    free (seen[i].name);
  free (seen);
  checkpoints_free_all ();
  clear_dir ();
  return 0;
}
