/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Disk identity in node.NODE (see disk-identity.h). */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "engines/disk-identity.h"

/* The fields after the length: kind, flags, dev, ino, rdev, size,
 * ctime seconds, nanoseconds.  A longer record (a later version) is
 * read as far as this one knows.
 */
#define ID_LEN (1 + 1 + 8 * 5 + 4)
enum { ID_HAS_CTIME = 1 };

static int (*service) (const char *node, struct disk_identity *out);
static char *path;              /* the file= of a stock plugin */
static unsigned nr_paths;
/* path existed when the node was loaded: its vanishing by shutdown is
 * a change, not a remote path (vddk's file= is one).
 */
static bool path_seen;

void
disk_identity_use_service (int (*fn) (const char *, struct disk_identity *))
{
  service = fn;
}

int
disk_identity_add_path (const char *abs)
{
  char *copy = strdup (abs);

  if (copy == NULL) {
    nbdkit_error ("checkpoint: strdup: %m");
    return -1;
  }
  free (path);
  path = copy;
  nr_paths++;
  return 0;
}

void
disk_identity_free_paths (void)
{
  free (path);
  path = NULL;
  nr_paths = 0;
}

/* 1 with *OUT, 0 when N has no file, -1 with errno. */
static int
take (const struct node *n, struct disk_identity *out)
{
  struct stat st;

  if (service)
    return service (n->name, out);
  if (nr_paths != 1)            /* none, or several (split) */
    return 0;
  if (stat (path, &st) == -1)
    return -1;
  if (!S_ISREG (st.st_mode) && !S_ISBLK (st.st_mode))
    return 0;
  path_seen = true;
  disk_identity_from_stat (&st, n->size, out);
  return 1;
}

void
disk_identity_put (struct state_buf *b, const struct node *n, bool clean)
{
  struct disk_identity id = { 0 };
  int kind, r = take (n, &id);

  if (r == 1)
    kind = id.block ? ID_BLOCK : ID_FILE;
  else if (r == 0 || (errno == ENOENT && !path_seen))
    kind = ID_NONE;
  else {
    kind = ID_UNKNOWN;
    if (clean)
      nbdkit_error ("checkpoint: cannot take the identity of disk '%s': "
                    "%m: its bitmaps will load as inconsistent", n->name);
  }
  state_put_u32 (b, ID_LEN);
  state_put_u8 (b, kind);
  state_put_u8 (b, clean && kind == ID_FILE ? ID_HAS_CTIME : 0);
  state_put_u64 (b, id.dev);
  state_put_u64 (b, id.ino);
  state_put_u64 (b, id.rdev);
  state_put_u64 (b, id.size);
  state_put_u64 (b, (uint64_t) id.ctime_sec);
  state_put_u32 (b, id.ctime_nsec);
}

int
disk_identity_get (struct state_reader *r, struct saved_identity *out)
{
  uint32_t len = 0, nsec = 0;
  uint8_t kind = 0, flags = 0;
  uint64_t sec = 0;
  const void *rest;

  memset (out, 0, sizeof *out);
  out->kind = ID_ABSENT;
  if (r->err || r->left <= 1)   /* only the clean byte: older state */
    return r->err ? -1 : 0;
  state_get_u32 (r, &len);
  state_get_u8 (r, &kind);
  state_get_u8 (r, &flags);
  state_get_u64 (r, &out->id.dev);
  state_get_u64 (r, &out->id.ino);
  state_get_u64 (r, &out->id.rdev);
  state_get_u64 (r, &out->id.size);
  state_get_u64 (r, &sec);
  state_get_u32 (r, &nsec);
  if (r->err || len < ID_LEN || kind > ID_UNKNOWN || nsec >= 1000000000 ||
      state_get_span (r, len - ID_LEN, &rest) == -1)
    return -1;
  out->kind = kind;
  out->has_ctime = flags & ID_HAS_CTIME;
  out->id.block = kind == ID_BLOCK;
  out->id.ctime_sec = (int64_t) sec;
  out->id.ctime_nsec = nsec;
  return 0;
}

static void
format_time (char *buf, size_t len, int64_t sec, uint32_t nsec)
{
  time_t t = sec;
  struct tm tm;
  char s[32];

  if (gmtime_r (&t, &tm) == NULL ||
      strftime (s, sizeof s, "%Y-%m-%d %H:%M:%S", &tm) == 0)
    snprintf (s, sizeof s, "%" PRIi64, sec);
  snprintf (buf, len, "%s.%09" PRIu32 " UTC", s, nsec);
}

/* What differs between the saved identity S and NOW, into WHY; false
 * if nothing does.
 */
static bool
describe_change (const struct saved_identity *s,
                 const struct disk_identity *now, char *why, size_t len)
{
  const struct disk_identity *was = &s->id;
  char t1[64], t2[64];

  if (was->block != now->block)
    snprintf (why, len, "it was a %s and is now a %s",
              was->block ? "block device" : "file",
              now->block ? "block device" : "file");
  else if (was->block && was->rdev != now->rdev)
    snprintf (why, len, "it is another block device (%u:%u, was %u:%u)",
              major (now->rdev), minor (now->rdev),
              major (was->rdev), minor (was->rdev));
  else if (!was->block && (was->dev != now->dev || was->ino != now->ino))
    snprintf (why, len, "it is another file (device %u:%u inode %" PRIu64
              ", was device %u:%u inode %" PRIu64 ")",
              major (now->dev), minor (now->dev), now->ino,
              major (was->dev), minor (was->dev), was->ino);
  else if (was->size != now->size)
    snprintf (why, len, "its size %" PRIu64 " differs from %" PRIu64
              " bytes", now->size, was->size);
  else if (!was->block && s->has_ctime &&
           (was->ctime_sec != now->ctime_sec ||
            was->ctime_nsec != now->ctime_nsec)) {
    format_time (t1, sizeof t1, now->ctime_sec, now->ctime_nsec);
    format_time (t2, sizeof t2, was->ctime_sec, was->ctime_nsec);
    snprintf (why, len, "change time %s differs from %s", t1, t2);
  }
  else
    return false;
  return true;
}

bool
disk_identity_unchanged (const struct node *n,
                         const struct saved_identity *saved)
{
  struct disk_identity now = { 0 };
  char why[256];
  int r;

  if (saved->kind == ID_ABSENT || saved->kind == ID_NONE)
    return true;
  if (saved->kind == ID_UNKNOWN)
    snprintf (why, sizeof why, "its identity could not be taken when "
              "nbdkit last stopped");
  else if ((r = take (n, &now)) == -1)
    snprintf (why, sizeof why, "its identity cannot be taken: %s",
              strerror (errno));
  else if (r == 0)
    snprintf (why, sizeof why, "it was a %s and now has none",
              saved->kind == ID_BLOCK ? "block device" : "file");
  else if (!describe_change (saved, &now, why, sizeof why))
    return true;
  nbdkit_error ("checkpoint: disk '%s' changed while nbdkit was not "
                "running: %s: its bitmaps are inconsistent; a full backup "
                "is needed", n->name, why);
  return false;
}
