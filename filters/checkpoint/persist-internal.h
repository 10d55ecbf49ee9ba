/* Between persist.c and persist-load.c only. */
#ifndef CHECKPOINT_PERSIST_INTERNAL_H
#define CHECKPOINT_PERSIST_INTERNAL_H

#include <stdbool.h>
#include "nodes.h"

/* File kinds (the header's kind field of common/state). */
enum { KIND_CHECKPOINTS = 1, KIND_NODE = 2, KIND_BITMAP = 3 };

/* Flags of a bitmap in node.NODE. */
enum { F_RECORDING = 1, F_CHECKPOINT = 2, F_INCONSISTENT = 4 };

extern const char *persist_dir (void);
extern void persist_set_aside (const char *name);
/* CLEAN: the bits are saved too.  DURABLE: fsync'd. */
extern int persist_save_node (struct node *n, bool clean, bool durable);

#endif /* CHECKPOINT_PERSIST_INTERNAL_H */
