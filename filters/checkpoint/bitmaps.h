/* QEMU's dirty bitmap operations on the filter's nodes, with QEMU's
 * checks and error texts.  Each changes the node at once and records
 * its undo in the txn (txn.h), so that single commands and
 * transactions share this code.  Called with the monitor lock held and
 * the barrier raised (inside a txn); lookups need only the monitor
 * lock.
 */
#ifndef CHECKPOINT_BITMAPS_H
#define CHECKPOINT_BITMAPS_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "qmp.h"
#include "nodes.h"
#include "txn.h"

#define DEFAULT_GRANULARITY 65536
#define BITMAP_NAME_MAX 1023

extern void dirty_bitmap_free (struct dirty_bitmap *d);

/* The node NAME, or an error naming it as QEMU does. */
extern struct node *bitmaps_node (const char *name, struct qmp_error *err);
extern struct dirty_bitmap *bitmaps_find (struct node *n, const char *name);
/* Find NAME on NODE for a command; NULL with QEMU's error if missing,
 * or (when CHANGE) busy or inconsistent.
 */
extern struct dirty_bitmap *bitmaps_lookup (const char *node,
                                            const char *name, bool change,
                                            struct node **np,
                                            struct qmp_error *err);

extern int bitmaps_add (struct txn *t, struct node *n, const char *name,
                        uint32_t granularity, bool persistent,
                        bool disabled, struct qmp_error *err);
/* Removed at commit; busy until then. */
extern int bitmaps_remove (struct txn *t, struct node *n,
                           struct dirty_bitmap *d);
/* What D says can no longer be trusted (its changes are unknown). */
extern int bitmaps_set_inconsistent (struct txn *t, struct node *n,
                                     struct dirty_bitmap *d);
extern int bitmaps_clear (struct txn *t, struct node *n,
                          struct dirty_bitmap *d);
extern int bitmaps_set_recording (struct txn *t, struct node *n,
                                  struct dirty_bitmap *d, bool on);
/* TARGET |= SRC, keeping a copy of TARGET for undo. */
extern int bitmaps_merge (struct txn *t, struct node *n,
                          struct dirty_bitmap *target,
                          const struct bitmap *src);

/* bitmap-info objects of N, newest first. */
extern json_t *bitmaps_describe (struct node *n);

/* The QMP commands (bitmap-commands.c), also transaction actions. */
extern void bitmap_register_commands (void);

#endif /* CHECKPOINT_BITMAPS_H */
