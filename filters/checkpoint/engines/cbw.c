/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Copy-before-write (see cbw.h). */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "rounding.h"
#include "bitmap.h"
#include "engines/cbw.h"

struct cbw {
  struct node *node;
  uint64_t size;                /* frozen size */
  enum cbw_on_error on_error;
  struct cbw_owner owner;
  struct block_copy *bc;
  struct bitmap *needed;        /* NULL: every block */
  /* Blocks written since the freeze; kept for incremental views only
   * (a full view saves every block it serves).
   */
  struct bitmap *changed;
  const struct bitmap *copied;  /* the owner's, or NULL: see cbw.h */
};

struct cbw *
cbw_new (struct node *n, struct bitmap *needed, enum cbw_on_error on_error,
         const struct cbw_owner *owner, const char *scratch_dir,
         struct qmp_error *err)
{
  struct cbw *c = calloc (1, sizeof *c);

  if (c == NULL) {
    bitmap_free (needed);
    qmp_error (err, "out of memory");
    return NULL;
  }
  c->node = n;
  c->size = n->size;
  c->on_error = on_error;
  c->owner = *owner;
  c->needed = needed;
  if (needed && (c->changed = bitmap_new (n->size, BLOCK_COPY_BLOCK)) == NULL) {
    qmp_error (err, "out of memory");
    cbw_free (c);
    return NULL;
  }
  c->bc = block_copy_new (owner->name, n->size, scratch_dir, err);
  if (c->bc == NULL) {
    cbw_free (c);
    return NULL;
  }
  return c;
}

void
cbw_free (struct cbw *c)
{
  if (c) {
    block_copy_free (c->bc);
    bitmap_free (c->needed);
    bitmap_free (c->changed);
    free (c);
  }
}

/* Before a guest write of [OFFSET, OFFSET+COUNT) passes down (the
 * barrier held shared): remember unneeded blocks changing, save the
 * needed ones.
 */
static int
before_write (void *opaque, nbdkit_next *next, uint64_t offset,
              uint32_t count, int *err)
{
  struct cbw *c = opaque;

  if (offset >= c->size || c->owner.dead (c->owner.opaque))
    return 0;
  /* Recorded before anything lands: reads of unneeded blocks check it. */
  if ((c->changed == NULL ||
       bitmap_set_range (c->changed, offset, count) != -1) &&
      block_copy_save_skip (c->bc, next, offset, offset + count, c->needed,
                            c->copied) == 0)
    return 0;
  if (c->on_error == CBW_BREAK_GUEST_WRITE) {
    *err = errno;
    nbdkit_error ("checkpoint: copy-before-write for %s: %m; the write "
                  "fails (on-cbw-error=break-guest-write)", c->owner.name);
    return -1;
  }
  c->owner.failed (c->owner.opaque, "copy-before-write failed", errno);
  return 0;
}

int
cbw_attach (struct cbw *c, struct qmp_error *err)
{
  if (node_add_write_hook (c->node, before_write, c) == -1) {
    qmp_error (err, "out of memory");
    return -1;
  }
  return 0;
}

void
cbw_detach (struct cbw *c)
{
  node_remove_write_hook (c->node, c);
}

void
cbw_set_copied (struct cbw *c, const struct bitmap *copied)
{
  c->copied = copied;
}

void
cbw_discard (struct cbw *c)
{
  block_copy_discard (c->bc);
}

struct node *
cbw_node (const struct cbw *c)
{
  return c->node;
}

uint64_t
cbw_size (const struct cbw *c)
{
  return c->size;
}

uint64_t
cbw_copied_bytes (const struct cbw *c)
{
  return block_copy_copied_bytes (c->bc);
}

struct block_copy *
cbw_block_copy (const struct cbw *c)
{
  return c->bc;
}

const struct bitmap *
cbw_needed (const struct cbw *c)
{
  return c->needed;
}

const char *
cbw_owner_name (const struct cbw *c)
{
  return c->owner.name;
}

bool
cbw_unneeded_changed (const struct cbw *c, uint64_t offset, uint32_t count)
{
  uint64_t pos;

  if (c->needed == NULL)
    return false;
  for (pos = offset; pos < offset + count;
       pos = ROUND_DOWN (pos, BLOCK_COPY_BLOCK) + BLOCK_COPY_BLOCK)
    if (!bitmap_test (c->needed, pos) && bitmap_test (c->changed, pos))
      return true;
  return false;
}
