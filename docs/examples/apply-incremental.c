/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* apply-incremental: read an incremental backup export of
 * nbdkit-checkpoint with libnbd and apply it onto the previous backup,
 * a raw image file, which then holds the disk at the backup's instant.
 *
 *   apply-incremental URI TARGET
 *
 * Build: cc -o apply-incremental apply-incremental.c \
 *          $(pkg-config --cflags --libs libnbd)
 *
 * base:allocation of an incremental export:
 *   HOLE, no ZERO  unchanged since the checkpoint: keep TARGET's bytes
 *   HOLE|ZERO      changed, now reads as zeros: write zeros
 *   neither        changed: read it and write it
 * A full backup export has no HOLE-only extent, so this also makes a
 * full backup into an empty TARGET.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libnbd.h>

/* Reads and block status queries stay well below server limits. */
#define MAX_REQUEST (4 * 1024 * 1024)
#define MAX_STATUS (1024 * 1024 * 1024)

static char buf[MAX_REQUEST];
static const char zeros[MAX_REQUEST];

struct extent { uint64_t offset, length; uint32_t flags; };
struct extents { struct extent *v; size_t n, cap; bool oom; };

/* Called once per meta context: keep base:allocation's extents. */
static int
extent_cb (void *opaque, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t nr_entries, int *error)
{
  struct extents *e = opaque;
  size_t i;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  for (i = 0; i + 1 < nr_entries; i += 2) {
    if (e->n == e->cap) {
      size_t cap = e->cap ? 2 * e->cap : 64;
      struct extent *v = realloc (e->v, cap * sizeof *v);
      if (v == NULL) {
        e->oom = true;
        return -1;
      }
      e->v = v;
      e->cap = cap;
    }
    e->v[e->n++] = (struct extent) { offset, entries[i], entries[i + 1] };
    offset += entries[i];
  }
  return 0;
}

static void
write_all (int fd, const char *p, size_t n, uint64_t offset,
           const char *target)
{
  while (n > 0) {
    ssize_t r = pwrite (fd, p, n, offset);
    if (r < 0) {
      perror (target);
      exit (EXIT_FAILURE);
    }
    p += r;
    n -= r;
    offset += r;
  }
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *nbd;
  struct extents e = { 0 };
  struct stat st;
  int64_t size;
  uint64_t pos = 0, nread = 0, nzero = 0, nskip = 0;
  int fd;

  if (argc != 3) {
    fprintf (stderr, "usage: %s URI TARGET\n", argv[0]);
    exit (EXIT_FAILURE);
  }

  nbd = nbd_create ();
  if (nbd == NULL ||
      nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      nbd_connect_uri (nbd, argv[1]) == -1) {
    fprintf (stderr, "%s\n", nbd_get_error ());
    exit (EXIT_FAILURE);
  }
  /* Without base:allocation every extent would look changed. */
  if (nbd_can_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1) {
    fprintf (stderr, "%s: the server offers no base:allocation\n", argv[1]);
    exit (EXIT_FAILURE);
  }
  size = nbd_get_size (nbd);
  if (size == -1) {
    fprintf (stderr, "%s\n", nbd_get_error ());
    exit (EXIT_FAILURE);
  }

  fd = open (argv[2], O_WRONLY | O_CREAT, 0644);
  if (fd == -1 || fstat (fd, &st) == -1 ||
      (st.st_size < size && ftruncate (fd, size) == -1)) {
    perror (argv[2]);
    exit (EXIT_FAILURE);
  }

  while (pos < (uint64_t) size) {
    uint64_t count = size - pos < MAX_STATUS ? size - pos : MAX_STATUS;
    size_t i;

    /* The server may describe less than asked, or more: go on from
     * the end of the last extent it returned.
     */
    e.n = 0;
    if (nbd_block_status (nbd, count, pos,
                          (nbd_extent_callback) { .callback = extent_cb,
                                                  .user_data = &e },
                          0) == -1) {
      fprintf (stderr, "%s\n", e.oom ? "out of memory" : nbd_get_error ());
      exit (EXIT_FAILURE);
    }
    if (e.n == 0 || e.v[0].offset != pos) {
      fprintf (stderr, "block status at %" PRIu64 ": no extent\n", pos);
      exit (EXIT_FAILURE);
    }
    for (i = 0; i < e.n && pos < (uint64_t) size; i++) {
      uint64_t end = e.v[i].offset + e.v[i].length;
      uint32_t flags = e.v[i].flags;

      if (e.v[i].length == 0) {
        fprintf (stderr, "empty extent at %" PRIu64 "\n", pos);
        exit (EXIT_FAILURE);
      }
      if (end > (uint64_t) size)
        end = size;
      if ((flags & LIBNBD_STATE_HOLE) && !(flags & LIBNBD_STATE_ZERO)) {
        nskip += end - pos;         /* unchanged: in the previous backup */
        pos = end;
        continue;
      }
      while (pos < end) {
        size_t n = end - pos < MAX_REQUEST ? end - pos : MAX_REQUEST;

        if (flags & LIBNBD_STATE_ZERO) {
          write_all (fd, zeros, n, pos, argv[2]);
          nzero += n;
        }
        else {
          if (nbd_pread (nbd, buf, n, pos, 0) == -1) {
            fprintf (stderr, "%s\n", nbd_get_error ());
            exit (EXIT_FAILURE);
          }
          write_all (fd, buf, n, pos, argv[2]);
          nread += n;
        }
        pos += n;
      }
    }
  }

  if (fsync (fd) == -1 || close (fd) == -1) {
    perror (argv[2]);
    exit (EXIT_FAILURE);
  }
  free (e.v);
  if (nbd_shutdown (nbd, 0) == -1) {
    fprintf (stderr, "%s\n", nbd_get_error ());
    exit (EXIT_FAILURE);
  }
  nbd_close (nbd);
  printf ("read %" PRIu64 " zeroed %" PRIu64 " skipped %" PRIu64 "\n",
          nread, nzero, nskip);
  exit (EXIT_SUCCESS);
}
