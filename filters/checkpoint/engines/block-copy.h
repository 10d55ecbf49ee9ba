/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The block-copy engine: keeps the frozen contents of a disk's blocks
 * in scratch files before they are overwritten, and reads the frozen
 * view back (saved blocks from scratch, the others from the disk).
 * Copy-before-write (cbw.h) drives it from guest writes; push jobs
 * will drive it from their copy loop.
 *
 * A block_copy has a saved-block map (which blocks of BLOCK_COPY_BLOCK
 * bytes are in scratch), scratch spread over several unlinked sparse
 * files, and stripe locks over regions of the disk: a saver holds the
 * stripes of its range exclusive while it copies and marks the blocks;
 * a reader holds one region's stripe shared while it reads there, so it
 * never sees a block half saved.  Lock order: the node's barrier
 * (callers), then stripes in ascending order, then the plugin's locks.
 */
#ifndef CHECKPOINT_ENGINES_BLOCK_COPY_H
#define CHECKPOINT_ENGINES_BLOCK_COPY_H

#include <stdbool.h>
#include <stdint.h>

#include "qmp.h"

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

struct bitmap;
struct block_copy;

/* Blocks saved to scratch are this big: a 4 KiB write saves 4 KiB. */
#define BLOCK_COPY_BLOCK 4096
/* File descriptors that one block_copy holds open. */
#define BLOCK_COPY_FDS 8

/* Scratch for a disk of SIZE bytes, in DIR (NULL: $TMPDIR, else
 * /var/tmp).  NAME says whose it is in messages ("backup b1").
 */
extern struct block_copy *block_copy_new (const char *name, uint64_t size,
                                          const char *dir,
                                          struct qmp_error *err);
extern void block_copy_free (struct block_copy *bc);
/* Give the scratch space back now (the owner has stopped using the
 * frozen view, but readers may still hold the block_copy): waits for
 * reads in flight; reads of saved blocks fail afterwards.
 */
extern void block_copy_discard (struct block_copy *bc);

/* Save the blocks of [OFFSET, END) that are not saved yet and that
 * NEEDED marks (NULL: every block).  -1 with errno on error (ENOSPC
 * for a full scratch store).
 */
extern int block_copy_save (struct block_copy *bc, nbdkit_next *next,
                            uint64_t offset, uint64_t end,
                            const struct bitmap *needed);
/* The same, also leaving out the blocks that SKIP marks: those a push
 * job has copied already, which the frozen view no longer needs
 * (QEMU's rule).  SKIP is only ever set, never cleared, while saves
 * run (bitmap_set_range is safe alongside them).
 */
extern int block_copy_save_skip (struct block_copy *bc, nbdkit_next *next,
                                 uint64_t offset, uint64_t end,
                                 const struct bitmap *needed,
                                 const struct bitmap *skip);

/* Read [OFFSET, OFFSET+COUNT) of the frozen view.  -1 with *ERR (and
 * an nbdkit_error) on error.
 */
extern int block_copy_read (struct block_copy *bc, nbdkit_next *next,
                            void *buf, uint32_t count, uint64_t offset,
                            int *err);

/* Is the block holding OFFSET in scratch?  The end (at most END) of
 * the run of blocks from POS with the same answer.
 */
extern bool block_copy_is_saved (const struct block_copy *bc,
                                 uint64_t offset);
extern uint64_t block_copy_saved_run_end (const struct block_copy *bc,
                                          uint64_t pos, uint64_t end);

/* Is there room for NR more block_copys and EXTRA more descriptors
 * under nbdkit's descriptor limit (ulimit -n), leaving
 * BLOCK_COPY_FDS_RESERVED free for everything else (saving state, new
 * connections, the plugin)?  -1 with *ERR saying the budget ("Cannot
 * WHAT: ...") if not.
 */
#define BLOCK_COPY_FDS_RESERVED 64
extern int block_copy_fd_budget (size_t nr, unsigned extra, const char *what,
                                 struct qmp_error *err);

/* Bytes copied to scratch so far. */
extern uint64_t block_copy_copied_bytes (const struct block_copy *bc);

#endif /* CHECKPOINT_ENGINES_BLOCK_COPY_H */
