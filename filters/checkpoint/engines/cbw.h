/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Copy-before-write: a write hook on a node that keeps a point in time
 * of it readable (QEMU's block/copy-before-write.c).  Before a guest
 * write changes blocks that the frozen view still needs, block-copy
 * saves their old contents; snapshot-access.h reads the view.
 *
 * What "needed" means: every block, or for an incremental view only
 * the chunks of a bitmap (the changes since its base checkpoint).
 * Blocks outside that are never saved; the cbw records which of them
 * guest writes have changed since the freeze, so that a read of one
 * fails instead of returning new data.
 *
 * cbw_attach and cbw_detach run with the node's barrier held exclusive
 * (inside a txn), so the freeze is one instant.  The owner (a pull
 * backup, later a push job) says when the view is dead (then writes
 * no longer pay for it) and hears when it breaks.
 */
#ifndef CHECKPOINT_ENGINES_CBW_H
#define CHECKPOINT_ENGINES_CBW_H

#include <stdbool.h>
#include <stdint.h>

#include "qmp.h"
#include "core/node.h"
#include "engines/block-copy.h"

enum cbw_on_error {
  CBW_BREAK_SNAPSHOT,           /* the write goes on, the view fails */
  CBW_BREAK_GUEST_WRITE,        /* the write fails, the view is intact */
};

struct cbw_owner {
  const char *name;                     /* "backup b1", in messages */
  bool (*dead) (void *opaque);          /* read without locks, often */
  void (*failed) (void *opaque, const char *what, int errnum);
  void *opaque;
};

struct cbw;

/* A frozen view of N at its current size.  NEEDED (stolen; NULL:
 * every block) limits what is saved.  SCRATCH_DIR as block-copy.h.
 */
extern struct cbw *cbw_new (struct node *n, struct bitmap *needed,
                            enum cbw_on_error on_error,
                            const struct cbw_owner *owner,
                            const char *scratch_dir, struct qmp_error *err);
extern void cbw_free (struct cbw *c);

/* Start and stop intercepting writes (barrier held exclusive).
 * cbw_attach: -1 with *ERR on ENOMEM.
 */
extern int cbw_attach (struct cbw *c, struct qmp_error *err);
extern void cbw_detach (struct cbw *c);
/* Before cbw_attach: COPIED (the owner's, set-only, outliving C) marks
 * the chunks the owner has read for good: guest writes there no
 * longer save them (QEMU's rule for backup jobs).  The owner must
 * not read a chunk of the view after marking it.
 */
extern void cbw_set_copied (struct cbw *c, const struct bitmap *copied);
/* After cbw_detach: give the scratch back now (block_copy_discard). */
extern void cbw_discard (struct cbw *c);

extern struct node *cbw_node (const struct cbw *c);
extern uint64_t cbw_size (const struct cbw *c);     /* the frozen size */
extern uint64_t cbw_copied_bytes (const struct cbw *c);

/* For snapshot-access. */
extern struct block_copy *cbw_block_copy (const struct cbw *c);
/* The needed chunks (NULL: all of them). */
extern const struct bitmap *cbw_needed (const struct cbw *c);
/* Has a guest write changed an unneeded block of the range? */
extern bool cbw_unneeded_changed (const struct cbw *c, uint64_t offset,
                                  uint32_t count);
extern const char *cbw_owner_name (const struct cbw *c);

#endif /* CHECKPOINT_ENGINES_CBW_H */
