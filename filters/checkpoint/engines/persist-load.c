/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Loading a node's bitmaps from the state directory (see persist.h). */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "cleanup.h"
#include "bitmap.h"
#include "state.h"
#include "buffer.h"
#include "core/bitmap-ops.h"
#include "core/checkpoint-chain.h"
#include "engines/disk-identity.h"
#include "engines/journal.h"
#include "engines/persist.h"
#include "engines/persist-format.h"

/* What loading a node file knows about how it was left. */
struct load_ctx {
  bool clean;                   /* saved cleanly: trust the bits files */
  /* Not clean: a journal of this boot (or a durable one) was found, so
   * the bits files with stable names can be trusted, and those it
   * covers get its ranges too.
   */
  bool journal_ok;
  struct journal_contents jc;
  /* A checkpoint's bitmap whose checkpoint is gone was found. */
  bool orphan;
};

/* Is there something called NAME in the state directory? */
static bool
access_exists (const char *name)
{
  CLEANUP_FREE char *path = NULL;
  struct stat st;

  return asprintf (&path, "%s/%s", persist_dir (), name) != -1 &&
    lstat (path, &st) == 0;
}

/* A journal that is no file (what was one is read or set aside by
 * now) would block the next one: set it aside.
 */
static void
set_aside_odd_journal (struct node *n)
{
  CLEANUP_FREE char *name = NULL, *path = NULL;
  struct stat st;

  if (asprintf (&name, "journal.%s", n->name) == -1 ||
      asprintf (&path, "%s/%s", persist_dir (), name) == -1 ||
      lstat (path, &st) == -1 || S_ISREG (st.st_mode))
    return;
  nbdkit_error ("checkpoint: %s is not a regular file: it cannot be the "
                "journal of node '%s'", path, n->name);
  persist_set_aside (name);
}

/* The bits of bitmap I, called BITMAP, or NULL if they cannot be
 * trusted (then it is inconsistent, and the log says which and why).
 */
static struct bitmap *
load_bits (struct node *n, uint32_t i, const char *bitmap,
           uint32_t granularity, bool stable)
{
  CLEANUP_FREE char *name = NULL;
  CLEANUP_FREE void *data = NULL;
  const char *why = NULL;
  struct bitmap *bm = NULL;
  size_t len;

  if ((name = persist_bits_file (n, bitmap, i, stable)) == NULL)
    return NULL;
  if (state_read (persist_dir (), name, KIND_BITMAP, &data, &len) == -1)
    why = strerror (errno);
  else if ((bm = bitmap_deserialize_as (data, len, n->size,
                                        granularity)) == NULL)
    why = errno == ENOMEM ? strerror (errno) :
      "its bits do not match the node's size or the bitmap's granularity";
  if (why) {
    nbdkit_error ("checkpoint: bitmap '%s' of node '%s' (%s/%s): %s: it is "
                  "inconsistent from now on (the next backup from it must "
                  "be a full one)", bitmap, n->name, persist_dir (), name,
                  why);
    /* Out of the way of its next save (a directory would block it). */
    if (access_exists (name))
      persist_set_aside (name);
    bitmap_free (bm);
    return NULL;
  }
  return bm;
}

/* The journal's writes into BM; false on ENOMEM. */
static bool
replay (struct bitmap *bm, const struct journal_contents *jc)
{
  size_t k;

  for (k = 0; k < jc->nr_ranges; k++)
    if (bitmap_set_range (bm, jc->ranges[2 * k], jc->ranges[2 * k + 1])
        == -1)
      return false;
  return true;
}

/* After a crash: can entry NAME's bits be had, and from what? */
static bool
recoverable (struct node *n, const struct load_ctx *ctx, const char *name,
             uint8_t flags, bool *covered)
{
  *covered = false;
  if (!ctx->journal_ok || !(flags & F_STABLE_NAME) ||
      (flags & F_INCONSISTENT))
    return false;
  *covered = journal_contents_covers (&ctx->jc, name);
  if ((flags & F_RECORDING) && !*covered) {
    nbdkit_error ("checkpoint: bitmap '%s' of node '%s' was recording but "
                  "the journal does not cover it: it is inconsistent from "
                  "now on (the next backup from it must be a full one)",
                  name, n->name);
    return false;
  }
  return true;
}

/* One bitmap entry of node.NODE: make it, with its bits when they can
 * be trusted (see struct load_ctx).
 */
static struct dirty_bitmap *
load_entry (struct node *n, struct state_reader *r, uint32_t i,
            struct load_ctx *ctx)
{
  bool covered = false, clean = ctx->clean;
  CLEANUP_FREE char *name = NULL;
  struct dirty_bitmap *d;
  uint32_t granularity = 0;
  uint8_t flags = 0;

  state_get_string (r, &name);
  state_get_u32 (r, &granularity);
  state_get_u8 (r, &flags);
  /* A name twice on one node: they would share bits files. */
  if (r->err || granularity < BITMAP_MIN_GRANULARITY ||
      (granularity & (granularity - 1)) || bitmaps_find (n, name))
    return NULL;
  d = calloc (1, sizeof *d);
  if (d == NULL)
    return NULL;
  d->name = name;
  name = NULL;
  d->persistent = true;
  d->recording = flags & F_RECORDING;
  d->checkpoint = flags & F_CHECKPOINT;
  if (!clean && recoverable (n, ctx, d->name, flags, &covered))
    clean = true;
  d->inconsistent = !clean || (flags & F_INCONSISTENT);
  /* A checkpoint's bitmap holds one interval of changes: without its
   * checkpoint (damaged checkpoints file) it means nothing usable.
   */
  if (d->checkpoint && checkpoints_find (d->name) == NULL) {
    d->checkpoint = false;
    d->inconsistent = true;
    ctx->orphan = true;
  }
  if (!d->inconsistent)
    d->bm = load_bits (n, i, d->name, granularity, flags & F_STABLE_NAME);
  if (d->bm && covered && !replay (d->bm, &ctx->jc)) {
    nbdkit_error ("checkpoint: replaying the journal of '%s' into bitmap "
                  "'%s': %m: it is inconsistent from now on", n->name,
                  d->name);
    bitmap_free (d->bm);
    d->bm = NULL;
  }
  if (d->bm == NULL) {
    d->inconsistent = true;
    d->bm = bitmap_new (n->size, granularity);
  }
  if (d->bm == NULL) {
    dirty_bitmap_free (d);
    return NULL;
  }
  if (!d->recording || d->inconsistent)
    bitmap_compact (d->bm);
  /* Its file holds exactly these bits (persist_attach_node). */
  d->saved_version = (flags & F_STABLE_NAME) && !covered &&
    !d->inconsistent ? 1 : 0;
  return d;
}

static int
size_mismatch (struct node *n, uint64_t saved, struct qmp_error *err)
{
  qmp_error (err, "Disk '%s' is %" PRIu64 " bytes but its saved "
             "bitmaps are for %" PRIu64 " bytes: refusing to track it "
             "wrongly (move %s/node.%s away to start afresh)",
             n->name, n->size, saved, persist_dir (), n->name);
  return -1;
}

static void
set_all_inconsistent (struct node *n)
{
  struct dirty_bitmap *d;

  for (d = n->bitmaps; d; d = d->next)
    if (d->persistent && !d->inconsistent) {
      d->inconsistent = true;
      bitmap_compact (d->bm);
    }
  node_update_recording (n);
}

static void
mark_all_inconsistent (struct node *n)
{
  nbdkit_error ("checkpoint: cannot mark the bitmaps of '%s' in use: "
                "they are inconsistent from now on", n->name);
  set_all_inconsistent (n);
}

static void
drop_bitmaps (struct node *n)
{
  struct dirty_bitmap *d;

  while ((d = n->bitmaps) != NULL) {
    n->bitmaps = d->next;
    dirty_bitmap_free (d);
  }
  node_update_recording (n);
}

/* Link the loaded bitmaps, oldest first, so the newest ends up first. */
static int
load_entries (struct node *n, struct state_reader *r, uint32_t nr,
              struct load_ctx *ctx)
{
  struct dirty_bitmap *d;
  uint32_t i;

  if (nr > r->left / 9 || node_reserve_recording (n, nr) == -1)
    return -1;
  for (i = 0; i < nr; i++) {
    d = load_entry (n, r, i, ctx);
    if (d == NULL)
      return -1;
    d->next = n->bitmaps;
    n->bitmaps = d;
  }
  node_update_recording (n);
  return 0;
}

/* Checkpoints that cover N but whose bitmap on N was not found (the
 * node file is missing, damaged or lacks it): each gets a stand-in,
 * inconsistent bitmap, so that the chain stays whole, incrementals
 * from it are refused and checkpoint-delete still works; the log names
 * them.
 */
static void
stand_in_lost_bitmaps (struct node *n, const char *cause)
{
  struct checkpoint *c;
  struct dirty_bitmap *d;

  for (c = checkpoints_list (); c; c = c->next) {
    if (!checkpoint_covers (c, n->name) || bitmaps_find (n, c->name))
      continue;
    d = dirty_bitmap_new (c->name, n->size, DEFAULT_GRANULARITY);
    if (d == NULL || node_reserve_recording (n, 1) == -1) {
      dirty_bitmap_free (d);
      nbdkit_error ("checkpoint: checkpoint '%s' has no bitmap on node "
                    "'%s' and none can be made: out of memory",
                    c->name, n->name);
      continue;
    }
    d->persistent = d->checkpoint = d->inconsistent = true;
    bitmap_compact (d->bm);
    d->next = n->bitmaps;
    n->bitmaps = d;
    nbdkit_error ("checkpoint: checkpoint '%s' covers node '%s' but %s: "
                  "its bitmap there is lost and marked inconsistent (the "
                  "next backup of '%s' from it must be a full one)",
                  c->name, n->name, cause, n->name);
  }
  node_update_recording (n);
}

/* After a crash, a checkpoint's bitmap without its checkpoint means a
 * checkpoint-delete (or a damaged checkpoints file) was cut short
 * between the checkpoints file and this node's files: its bits may not
 * have reached the parent's saved bits.  Until metadata is crash-atomic
 * (TODO), none of the node's checkpoints can be trusted.
 */
static void
distrust_checkpoints (struct node *n)
{
  struct dirty_bitmap *d;

  for (d = n->bitmaps; d; d = d->next)
    if (d->checkpoint && !d->inconsistent) {
      d->inconsistent = true;
      bitmap_compact (d->bm);
      nbdkit_error ("checkpoint: checkpoint '%s' on node '%s': a change "
                    "of the checkpoints was cut short by a crash: its "
                    "bitmap is inconsistent from now on (the next backup "
                    "from it must be a full one)", d->name, n->name);
    }
  node_update_recording (n);
}

/* Not saved cleanly: what does the journal say? */
static void
read_journal (struct node *n, struct load_ctx *ctx)
{
  CLEANUP_FREE char *name = NULL;

  switch (journal_read (persist_dir (), n->name, &ctx->jc)) {
  case JOURNAL_OK:
    ctx->journal_ok = true;
    if (ctx->jc.torn)
      nbdkit_debug ("checkpoint: journal of '%s': dropped a torn last "
                    "record (%zu bytes)", n->name, ctx->jc.torn);
    nbdkit_debug ("checkpoint: node '%s' was not shut down cleanly: "
                  "recovering its bitmaps from their saved bits and %zu "
                  "journal records", n->name, ctx->jc.nr_ranges);
    break;
  case JOURNAL_MISSING:
    nbdkit_debug ("checkpoint: node '%s' was not shut down cleanly and has "
                  "no journal (crash-safety=none?)", n->name);
    break;
  case JOURNAL_OTHER_BOOT:
    if (ctx->jc.power) {          /* everything was synced */
      ctx->journal_ok = true;
      break;
    }
    nbdkit_error ("checkpoint: node '%s' was in use when the host went "
                  "down (its journal is from another boot): its persistent "
                  "bitmaps are inconsistent from now on "
                  "(crash-safety=process survives a crash of nbdkit, not "
                  "of the host)", n->name);
    break;
  case JOURNAL_DAMAGED:
    nbdkit_error ("checkpoint: %s/journal.%s is damaged (%s): the "
                  "persistent bitmaps of node '%s' are inconsistent from "
                  "now on", persist_dir (), n->name, ctx->jc.why, n->name);
    if (asprintf (&name, "journal.%s", n->name) != -1)
      persist_set_aside (name);
    break;
  }
}

/* Read node.NODE into N's bitmaps.  0 when done or set aside (CAUSE
 * says what became of a missing or damaged file), -1 to refuse N.
 */
static int
read_node_file (struct node *n, const char *name, const char **cause,
                struct qmp_error *err)
{
  CLEANUP_FREE void *data = NULL;
  struct load_ctx ctx = { .clean = false };
  struct saved_identity id;
  struct state_reader r;
  uint64_t size = 0;
  uint32_t nr = 0;
  uint8_t clean = 0;
  size_t len;
  int ret;

  if (state_read (persist_dir (), name, KIND_NODE, &data, &len) == -1) {
    if (errno == ENOENT) {
      *cause = "its node file is missing";
      return 0;
    }
    /* Unreadable metadata: its bitmaps are lost, the disk is not. */
    nbdkit_error ("checkpoint: %s/%s: %m: the node's saved bitmaps are "
                  "dropped", persist_dir (), name);
    persist_set_aside (name);
    *cause = "its node file could not be read";
    return 0;
  }
  state_reader_init (&r, data, len);
  state_get_u64 (&r, &size);
  state_get_u32 (&r, &nr);
  if (r.err == 0 && size != n->size)
    return size_mismatch (n, size, err);
  /* The clean flag is the last byte; read it first. */
  if (len > 0)
    clean = ((const uint8_t *) data)[len - 1];
  ctx.clean = clean;
  if (!clean && r.err == 0 && nr > 0)
    read_journal (n, &ctx);
  ret = r.err ? -1 : load_entries (n, &r, nr, &ctx);
  journal_contents_free (&ctx.jc);
  if (ret == 0 && ctx.orphan && !clean)
    distrust_checkpoints (n);
  if (ret == -1 || disk_identity_get (&r, &id) == -1 ||
      state_get_u8 (&r, &clean) == -1 || state_reader_end (&r) == -1) {
    drop_bitmaps (n);
    nbdkit_error ("checkpoint: %s/%s is malformed: the node's saved "
                  "bitmaps are dropped", persist_dir (), name);
    persist_set_aside (name);
    *cause = "its node file was damaged";
    return 0;
  }
  if (!disk_identity_unchanged (n, &id))
    set_all_inconsistent (n);
  /* In use from now on, until saved cleanly: durably, or a crash could
   * leave a file that still says "clean" under changed bits.  If that
   * cannot be written, the bits cannot be trusted after a crash: say
   * so now.
   */
  if (persist_mode () == CRASH_SAFETY_NONE && clean &&
      persist_save_node (n, false, true) == -1)
    mark_all_inconsistent (n);
  *cause = "its node file does not list it";
  return 0;
}

int
persist_load_node (struct node *n, struct qmp_error *err)
{
  CLEANUP_FREE char *name = NULL;
  const char *cause = NULL;

  if (asprintf (&name, "node.%s", n->name) == -1) {
    qmp_error (err, "out of memory");
    return -1;
  }
  if (read_node_file (n, name, &cause, err) == -1)
    return -1;
  stand_in_lost_bitmaps (n, cause);
  set_aside_odd_journal (n);
  /* process, power: saved afresh, in use, with a new journal. */
  if (persist_attach_node (n) == -1 &&
      persist_mode () != CRASH_SAFETY_NONE) {
    mark_all_inconsistent (n);
    persist_save_node (n, false, true);   /* say so, if it can */
  }
  return 0;
}
