/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* libFuzzer target: the state file loader (common/state state_read).
 *
 * First input byte, mode:
 *   even: the rest is a state file as found on disk; state_read must
 *         either refuse it or return a payload whose length the header
 *         and the file size agree on.
 *   odd:  the rest is a payload (after a 2-byte position), written with
 *         state_write_flags and read back (must give it back), then the
 *         file is corrupted at the position (a byte flipped, or the
 *         file cut there) and must be refused: the checksums catch any
 *         change.
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

#include "state.h"

#define KIND 7

static char dir[256];

static void
cleanup (void)
{
  char path[300];

  snprintf (path, sizeof path, "%s/f", dir);
  unlink (path);
  rmdir (dir);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  const char *t = getenv ("TMPDIR");

  snprintf (dir, sizeof dir, "%s/fuzz-state-XXXXXX", t && *t ? t : "/tmp");
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

  snprintf (path, sizeof path, "%s/f", dir);
  fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd == -1 || (size && write (fd, data, size) != (ssize_t) size) ||
      close (fd) == -1) {
    perror (path);
    abort ();
  }
}

static size_t
file_size (void)
{
  char path[300];
  FILE *fp;
  long n;

  snprintf (path, sizeof path, "%s/f", dir);
  fp = fopen (path, "rb");
  if (fp == NULL || fseek (fp, 0, SEEK_END) == -1 || (n = ftell (fp)) < 0)
    abort ();
  fclose (fp);
  return n;
}

static void
raw_file (const uint8_t *data, size_t size)
{
  void *payload = NULL;
  size_t len = 0;

  put_file (data, size);
  if (state_read (dir, "f", KIND, &payload, &len) == 0) {
    if (payload == NULL || len + STATE_HEADER_SIZE != size)
      abort ();
    free (payload);
  }
  else if (errno != EBADMSG && errno != EPROTO && errno != EFBIG)
    abort ();
}

static void
round_trip (const uint8_t *data, size_t size)
{
  void *payload = NULL;
  size_t len = 0, pos, total;
  uint8_t *file;
  char path[300];
  FILE *fp;

  if (size < 2)
    return;
  pos = data[0] | (data[1] << 8);
  data += 2, size -= 2;
  if (state_write_flags (dir, "f", KIND, data, size, STATE_NO_SYNC) == -1)
    abort ();
  if (state_read (dir, "f", KIND, &payload, &len) == -1 ||
      len != size || (len && memcmp (payload, data, len) != 0))
    abort ();
  free (payload);
  if (state_read (dir, "f", KIND + 1, &payload, &len) != -1 ||
      errno != EBADMSG)
    abort ();                   /* another kind */

  /* Corrupt it: flip a byte (pos < size), or cut the file at pos. */
  total = file_size ();
  file = malloc (total);
  snprintf (path, sizeof path, "%s/f", dir);
  fp = fopen (path, "rb");
  if (file == NULL || fp == NULL || fread (file, 1, total, fp) != total)
    abort ();
  fclose (fp);
  if (pos < total) {
    file[pos] ^= 1 << (pos % 8);
    put_file (file, total);
  }
  else
    put_file (file, pos % total);
  if (state_read (dir, "f", KIND, &payload, &len) != -1 ||
      (errno != EBADMSG && errno != EPROTO)) {
    fprintf (stderr, "corruption at %zu of %zu not detected\n", pos, total);
    abort ();
  }
  free (file);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size == 0)
    return 0;
  if (data[0] & 1)
    round_trip (data + 1, size - 1);
  else
    raw_file (data + 1, size - 1);
  return 0;
}
