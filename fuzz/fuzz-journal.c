/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* libFuzzer target: the checkpoint filter's write journal reader
 * (filters/checkpoint/engines/journal.c journal_read), the one that
 * runs after a crash over whatever a kill left in DIR/journal.NODE.
 *
 * First input byte, mode:
 *   bit 0 clear: the rest is a journal file as found on disk.  Bit 1
 *         set: before writing it, the header's SHA-256 is made right
 *         (at the offset its length field gives), so that the fuzzer
 *         gets past the checksum into the header and the records.
 *         journal_read must refuse it with a reason, or give names and
 *         ranges that account for every byte of the file.
 *   bit 0 set: the rest is names and records (see round_trip), written
 *         with journal_start and journal_append (bit 1: power mode) and
 *         read back: the same names, ranges and mode must come back.
 * The files live in a directory made once, under $TMPDIR (or /tmp).
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

#include "engines/journal.h"

#define NODE "n"
#define HDR_FIXED 12            /* magic and the header's length */
#define SUM_LEN 32
#define RECORD_LEN 24
#define MAX_NAMES 16

static char dir[256];

static void
path_of (char *path, size_t n)
{
  snprintf (path, n, "%s/journal." NODE, dir);
}

static void
cleanup (void)
{
  char path[300];

  path_of (path, sizeof path);
  unlink (path);
  rmdir (dir);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  const char *t = getenv ("TMPDIR");

  snprintf (dir, sizeof dir, "%s/fuzz-journal-XXXXXX", t && *t ? t : "/tmp");
  if (mkdtemp (dir) == NULL) {
    perror (dir);
    exit (EXIT_FAILURE);
  }
  atexit (cleanup);
  return 0;
}

static void
put_file (const uint8_t *data, size_t size)
{
  char path[300];
  int fd;

  path_of (path, sizeof path);
  fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd == -1 || (size && write (fd, data, size) != (ssize_t) size) ||
      close (fd) == -1) {
    perror (path);
    abort ();
  }
}

/* Make the header's checksum right, if the header fits. */
static void
fix_sum (uint8_t *data, size_t size)
{
  uint64_t body_len, hdr_len;

  if (size < HDR_FIXED)
    return;
  body_len = data[8] | (data[9] << 8) | (data[10] << 16) |
    ((uint64_t) data[11] << 24);
  hdr_len = HDR_FIXED + body_len;
  if (hdr_len + SUM_LEN <= size &&
      gnutls_hash_fast (GNUTLS_DIG_SHA256, data, hdr_len,
                        data + hdr_len) < 0)
    abort ();
}

static void
raw_file (const uint8_t *data, size_t size, bool fix)
{
  struct journal_contents c;
  enum journal_status st;
  uint8_t *copy = malloc (size ? size : 1);
  size_t i, records;

  if (copy == NULL)
    abort ();
  memcpy (copy, data, size);
  if (fix)
    fix_sum (copy, size);
  put_file (copy, size);
  free (copy);
  st = journal_read (dir, NODE, &c);
  switch (st) {
  case JOURNAL_MISSING:
    abort ();                   /* it is there */
  case JOURNAL_DAMAGED:
    if (c.why == NULL)
      abort ();
    break;
  case JOURNAL_OK:
  case JOURNAL_OTHER_BOOT:
    if (c.names == NULL || c.ranges == NULL || c.torn >= RECORD_LEN)
      abort ();
    for (i = 0; i < c.nr_names; i++)
      if (c.names[i] == NULL || !journal_contents_covers (&c, c.names[i]))
        abort ();
    /* The records and the torn tail are the end of the file. */
    records = c.nr_ranges * RECORD_LEN + c.torn;
    if (records > size)
      abort ();
    break;
  }
  journal_contents_free (&c);
}

/* Input: a count byte (names, at most MAX_NAMES), then each name as a
 * length byte and its bytes (a NUL ends it early), then 16-byte
 * records (offset, length; little-endian).
 */
static void
round_trip (const uint8_t *data, size_t size, bool power)
{
  char *names[MAX_NAMES];
  size_t nr, i, k, l, nrec;
  struct journal_contents c;
  struct journal *j;
  uint64_t *want;

  if (size < 1)
    return;
  nr = data[0] % (MAX_NAMES + 1);
  data++, size--;
  for (i = 0; i < nr; i++) {
    l = size ? data[0] : 0;
    if (l >= size)
      l = size ? size - 1 : 0;
    names[i] = strndup (size ? (const char *) data + 1 : "", l);
    if (names[i] == NULL)
      abort ();
    data += size ? l + 1 : 0, size -= size ? l + 1 : 0;
  }
  nrec = size / 16;
  if (power && nrec > 4)
    nrec = 4;                   /* an fdatasync each: keep it quick */
  want = malloc ((nrec ? nrec : 1) * 2 * sizeof *want);
  j = journal_new (power);
  if (want == NULL || j == NULL)
    abort ();
  if (journal_start (j, dir, NODE, names, nr) == -1) {
    perror ("journal_start");
    abort ();
  }
  for (k = 0; k < nrec; k++) {
    uint64_t v[2] = { 0, 0 };
    for (l = 0; l < 16; l++)
      v[l / 8] |= (uint64_t) data[16 * k + l] << (8 * (l % 8));
    want[2 * k] = v[0], want[2 * k + 1] = v[1];
    if (journal_append (j, v[0], v[1]) == -1) {
      perror ("journal_append");
      abort ();
    }
  }
  if (!journal_started (j) || !journal_covers (j, names, nr))
    abort ();
  journal_free (j);

  if (journal_read (dir, NODE, &c) != JOURNAL_OK) {
    fprintf (stderr, "journal read back: %s\n", c.why ? c.why : "?");
    abort ();
  }
  if (c.power != power || c.torn != 0 || c.nr_names != nr ||
      c.nr_ranges != nrec ||
      (nrec && memcmp (c.ranges, want, nrec * 2 * sizeof *want) != 0))
    abort ();
  for (i = 0; i < nr; i++)
    if (strcmp (c.names[i], names[i]) != 0)
      abort ();
  journal_contents_free (&c);
  if (journal_remove (dir, NODE) == -1)
    abort ();
  for (i = 0; i < nr; i++)
    free (names[i]);
  free (want);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size == 0)
    return 0;
  if (data[0] & 1)
    round_trip (data + 1, size - 1, data[0] & 2);
  else
    raw_file (data + 1, size - 1, data[0] & 2);
  return 0;
}
