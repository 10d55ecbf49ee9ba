/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The node registry: the disks the filter tracks, by node name, each
 * with its dirty bitmaps, its write barrier and its write hooks.
 *
 * A guest write, zero or trim of a node goes: node_write_begin (take
 * the barrier shared, mark every recording bitmap), node_run_write_hooks
 * (copy-before-write and the like: they see the old data), the write
 * itself, node_write_end.  Whatever changes the bitmaps, the recording
 * set or the hooks holds the barrier exclusive, so no write is ever half
 * marked, and a change to several nodes at once (nodes_barrier_raise)
 * is one instant for the guest.
 *
 * Subscribers (persistence) hear of nodes being added (and may refuse
 * them), resized and removed: the registry itself keeps no files.
 *
 * Lock order (outermost first): the monitor lock; nodes_lock (in
 * node.c: guards the list and the connection counts against NBD
 * connections opening); a node's barrier (several nodes: in list
 * order).  The list changes only with the monitor lock held too, so
 * monitor code may walk it without nodes_lock.  A struct node lives
 * until it is removed, which is refused while connections have it
 * open, so a connection's pointer is stable.
 */
#ifndef CHECKPOINT_CORE_NODE_H
#define CHECKPOINT_CORE_NODE_H

#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>

#include "qmp.h"
#include "vector.h"
#include "core/dirty-bitmap.h"

struct bitmap;
struct nbdkit_next_ops;         /* nbdkit's nbdkit_next, passed through */

/* Runs before a guest write of [OFFSET, OFFSET+COUNT) passes down, with
 * the barrier held shared.  -1 with *ERR fails the write.
 */
typedef int (*node_write_hook_fn) (void *opaque, struct nbdkit_next_ops *next,
                                   uint64_t offset, uint32_t count,
                                   int *err);

struct node_write_hook {
  node_write_hook_fn fn;
  void *opaque;
};

/* Runs in node_write_begin (barrier held shared) before the bits of
 * [OFFSET, OFFSET+LEN) are set, when that range has a clean chunk in a
 * persistent recording bitmap: whoever keeps them records the range
 * first, so that once a chunk is seen dirty its record exists.  Writes
 * to chunks already dirty never call it.  -1 with errno fails the write.
 */
typedef int (*node_mark_observer_fn) (void *opaque, uint64_t offset,
                                      uint64_t len);

DEFINE_VECTOR_TYPE (bitmap_ptrs, struct bitmap *);
DEFINE_VECTOR_TYPE (node_write_hooks, struct node_write_hook);

struct node {
  struct node *next;            /* order of addition */
  char *name;
  uint64_t size;                /* changed under the barrier */
  unsigned connections;         /* open NBD connections, nodes_lock */
  pthread_rwlock_t barrier;     /* writer-preferring: see above */
  struct dirty_bitmap *bitmaps;
  /* What writes use, rebuilt or changed under the barrier. */
  bitmap_ptrs recording;        /* room for every bitmap, always */
  size_t nr_persistent;         /* the first ones of recording */
  node_write_hooks hooks;
  node_mark_observer_fn observer;
  void *observer_opaque;
};

struct node_events {
  /* N was added; -1 with *ERR refuses it (it is removed again). */
  int (*added) (struct node *n, struct qmp_error *err);
  void (*resized) (struct node *n);
  void (*removing) (struct node *n);    /* still complete */
};

/* At most NODE_MAX_SUBSCRIBERS, registered at start-up. */
#define NODE_MAX_SUBSCRIBERS 4
extern int nodes_subscribe (const struct node_events *events);

/* Monitor lock held (or single-threaded at start and stop). */
extern struct node *nodes_add (const char *name, uint64_t size,
                               struct qmp_error *err);
/* Bitmaps follow: new chunks clean, cut ones gone.  One that cannot be
 * resized becomes inconsistent: then -1 (ENOMEM).
 */
extern int nodes_resize (struct node *n, uint64_t size);
extern void nodes_remove (struct node *n);
extern void nodes_free_all (void);      /* at unload: no events */

extern struct node *nodes_find (const char *name);
/* NAME, or QEMU's error for a node that is not there. */
extern struct node *nodes_lookup (const char *name, struct qmp_error *err);
extern struct node *nodes_list (void);  /* the first; then n->next */

/* Count an NBD connection to node NAME (NULL if there is none). */
extern struct node *nodes_open (const char *name);
extern void nodes_close (struct node *n);

/* The barrier of every node, in list order. */
extern void nodes_barrier_raise (void);
extern void nodes_barrier_lower (void);

/* Barrier held exclusive.  Room in the recording set for EXTRA more
 * bitmaps, before linking them, so that node_update_recording never
 * fails; then rebuild it after any change of bitmaps or their flags.
 */
extern int node_reserve_recording (struct node *n, size_t extra);
extern void node_update_recording (struct node *n);
/* Barrier held exclusive.  -1 (ENOMEM) if the hook cannot be added. */
extern int node_add_write_hook (struct node *n, node_write_hook_fn fn,
                                void *opaque);
extern void node_remove_write_hook (struct node *n, void *opaque);
/* Barrier held exclusive.  FN NULL: none. */
extern void node_set_mark_observer (struct node *n, node_mark_observer_fn fn,
                                    void *opaque);

/* The write path (see above).  node_write_begin: -1 with errno when a
 * bitmap cannot be marked or the mark observer fails (the barrier is
 * then not held).
 * node_run_write_hooks: -1 with *ERR if a hook fails the write (the
 * barrier is still held: call node_write_end).
 */
extern int node_write_begin (struct node *n, uint64_t offset, uint64_t len);
extern int node_run_write_hooks (struct node *n, struct nbdkit_next_ops *next,
                                 uint64_t offset, uint32_t count, int *err);
extern void node_write_end (struct node *n);

#endif /* CHECKPOINT_CORE_NODE_H */
