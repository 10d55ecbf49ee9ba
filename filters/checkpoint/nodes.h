/* The filter's nodes: the disks it tracks, by node name.
 *
 * Over nbdkit-qmpdisk-plugin the nodes are the plugin's disks (the
 * plugin tells us when one is added, resized or removed); over any
 * other plugin there is one node, named by node-name=, whatever
 * export name a client asks for.
 *
 * Lock order (outermost first): the monitor lock, nodes_lock, a
 * node's barrier (several nodes: in list order).  nodes_lock guards
 * the list against NBD connections opening; the list changes only
 * with the monitor lock held too, so command handlers may walk it
 * without nodes_lock.  A struct node lives until the filter unloads or
 * the node is removed; removal is refused while connections have it
 * open, so a connection's pointer is stable.
 */
#ifndef CHECKPOINT_NODES_H
#define CHECKPOINT_NODES_H

#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>
#include <jansson.h>

#include "peer.h"

struct bitmap;

/* A named dirty bitmap of a node (QEMU's BdrvDirtyBitmap). */
struct dirty_bitmap {
  struct dirty_bitmap *next;    /* newest first, as QEMU lists them */
  char *name;
  struct bitmap *bm;
  bool recording;
  bool persistent;
  bool inconsistent;            /* not saved cleanly: unusable */
  bool checkpoint;              /* the bitmap of the checkpoint of its name */
  unsigned users;               /* backups and jobs reading it */
};

/* Busy bitmaps refuse the low-level commands. */
#define dirty_bitmap_busy(d) ((d)->checkpoint || (d)->users > 0)

struct node {
  struct node *next;
  char *name;
  uint64_t size;                /* changed under the barrier */
  unsigned connections;         /* open NBD connections, under nodes_lock */

  /* Guest writes hold the barrier shared from marking the bitmaps
   * until the plugin has the write; changes to the bitmaps hold it
   * exclusive (writer-preferring, so a change never starves).
   */
  pthread_rwlock_t barrier;
  struct dirty_bitmap *bitmaps;
  /* The recording bitmaps, which writes mark: rebuilt under the
   * barrier by nodes_update_recording.
   */
  struct bitmap **recording;
  size_t nr_recording;
  size_t recording_cap;         /* at least the number of bitmaps */

  /* Active backups of this node, changed under the barrier held
   * exclusive (see backup.h).
   */
  struct backup_disk *backups;
};

/* Set by .config and .get_ready. */
extern const char *single_node_name;      /* node-name=, default "disk" */
extern const struct qmp_disk_services *disk_services;  /* NULL: stock plugin */

/* Create the single node of a stock plugin, or the nodes of the
 * plugin's disks.
 */
extern int nodes_init_single (uint64_t size);
extern int nodes_init_from_plugin (void);
extern void nodes_free_all (void);

/* The node that export NAME opens, with a connection counted; NULL if
 * there is none.  nodes_close undoes it.
 */
extern struct node *nodes_open (const char *exportname);
extern void nodes_close (struct node *node);

/* Look a node up by name (monitor lock held).  NULL if unknown. */
extern struct node *nodes_find (const char *name);

/* Calls FN for every node, in order of addition (monitor lock held). */
extern void nodes_foreach (void (*fn) (struct node *n, void *opaque),
                           void *opaque);

/* The write barrier of every node, for txn.c. */
extern void nodes_barrier_raise (void);
extern void nodes_barrier_lower (void);
/* Room for EXTRA more bitmaps in the recording array (before linking
 * them); then nodes_update_recording never fails.  Barrier held.
 */
extern int nodes_reserve_recording (struct node *n, size_t extra);
extern void nodes_update_recording (struct node *n);

/* The write path: mark [OFFSET, OFFSET+LEN) in every recording bitmap
 * and hold the barrier until nodes_write_end.  -1 with errno on error
 * (the barrier is then not held).
 */
extern int nodes_write_begin (struct node *n, uint64_t offset, uint64_t len);
extern void nodes_write_end (struct node *n);

/* query-named-block-nodes over a stock plugin. */
extern json_t *nodes_describe_single (void);

/* The hooks the plugin calls (see peer.h). */
extern const struct qmp_node_hooks node_hooks;

#endif /* CHECKPOINT_NODES_H */
