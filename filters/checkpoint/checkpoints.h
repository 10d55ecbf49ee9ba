/* Checkpoints, libvirt's model over our bitmaps.
 *
 * Checkpoints are kept in creation order; each names its disks.  On
 * each disk, the checkpoints that cover it form a chain in which only
 * the newest one's bitmap records: the bitmap of checkpoint k holds the
 * changes from k to the next checkpoint of that disk.  "Changed since
 * K" is the OR of K's bitmap and every later one on the disk, built on
 * demand, so a guest write costs one bitmap however many checkpoints
 * there are.
 *
 * All functions run with the monitor lock held; the changing ones
 * inside a txn.
 */
#ifndef CHECKPOINT_CHECKPOINTS_H
#define CHECKPOINT_CHECKPOINTS_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "qmp.h"
#include "txn.h"
#include "nodes.h"

struct checkpoint {
  struct checkpoint *next;      /* creation order, oldest first */
  struct checkpoint *parent;
  char *name;
  char *description;            /* may be NULL */
  int64_t creation_time;        /* seconds */
  char **disks;                 /* node names */
  size_t nr_disks;
};

extern struct checkpoint *checkpoints_find (const char *name);
extern struct checkpoint *checkpoints_list (void);
extern struct checkpoint *checkpoints_current (void);
extern bool checkpoint_covers (const struct checkpoint *c, const char *node);

/* The bitmap of N that holds what changed on N since checkpoint C: a
 * new bitmap (the caller frees it), or NULL with *ERR set.
 */
extern struct bitmap *checkpoints_changed_since (const struct checkpoint *c,
                                                 struct node *n,
                                                 struct qmp_error *err);

/* Create checkpoint NAME over DISKS (NULL: every node). */
extern struct checkpoint *checkpoints_create (struct txn *t, const char *name,
                                              const char *description,
                                              json_t *disks,
                                              struct qmp_error *err);
extern int checkpoints_delete (struct txn *t, struct checkpoint *c,
                               bool metadata_only, struct qmp_error *err);

/* Loading state: add a checkpoint as it was saved (no bitmaps made). */
extern int checkpoints_restore (const char *name, const char *parent,
                                const char *description, int64_t ctime,
                                char **disks, size_t nr_disks);
extern void checkpoints_set_current (struct checkpoint *c);
extern void checkpoints_free_all (void);

extern void checkpoint_register_commands (void);

#endif /* CHECKPOINT_CHECKPOINTS_H */
