/* Checkpoints and persistent bitmaps in the state directory (state=).
 *
 * Files (common/state: atomic replace, checksums):
 *   checkpoints          every checkpoint, in creation order
 *   node.NODE            a node's size, its persistent bitmaps' names
 *                        and flags, and whether it was saved cleanly
 *   bitmap.NODE.I        the bits of the I-th bitmap of node.NODE
 *
 * The bits are written when nbdkit shuts down cleanly (or the node is
 * removed).  While nbdkit runs, node.NODE says "in use", as QEMU's
 * in-use flag does: after a crash its bitmaps load as inconsistent.
 * So only the in-use mark (written when a node loads) and the clean
 * save need fsync; changes while running are replaced atomically but
 * not synced, to keep checkpoint-create fast.  (Crash-safe bitmaps are
 * a later step; see TODO.)
 *
 * All functions run with the monitor lock held (or single threaded at
 * start and stop).  Errors go to nbdkit_error; a failure to save
 * leaves the previous files valid.
 */
#ifndef CHECKPOINT_PERSIST_H
#define CHECKPOINT_PERSIST_H

#include <stdbool.h>

#include "nodes.h"

extern int persist_set_dir (const char *dir);
extern bool persist_enabled (void);

/* Load the checkpoints file (once, before the nodes). */
extern int persist_load_checkpoints (void);
/* Load node.NODE for a node that has just appeared.  Refuses (-1 and a
 * malloc'ed reason in *WHY) a node whose size differs from the saved
 * one.
 */
extern int persist_load_node (struct node *n, char **why);

/* Save the metadata (checkpoints, node files marked in use).  -1 if
 * a file could not be written (the error is logged; that file keeps
 * its previous contents).
 */
extern int persist_save_metadata (void);
/* Save everything, bits included, and mark the nodes clean. */
extern void persist_save_all (void);
/* Save one node cleanly (before it goes away). */
extern void persist_save_node_clean (struct node *n);

#endif /* CHECKPOINT_PERSIST_H */
