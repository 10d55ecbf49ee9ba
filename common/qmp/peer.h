/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The one interface between nbdkit-checkpoint's two components.
 *
 * nbdkit loads the plugin and the filter RTLD_GLOBAL, so each finds
 * the other's table with dlsym (RTLD_DEFAULT, SYMBOL).  Both link their
 * own copy of common/ with hidden visibility; only these tables (and
 * nbdkit's entry points) are exported.
 *
 * Exactly one component hosts the monitor: the one that was given
 * qmp=PATH.  nbdkit passes every parameter to the filter first, so
 * with the filter loaded the filter hosts, and only the plugin needs
 * to export a table (QMP_PEER_PLUGIN_SYMBOL).  The host serves its own
 * commands and its peer's (its own first, so the filter's
 * query-named-block-nodes, which adds bitmaps, wins), and lends the
 * peer its event sender and monitor lock through attach ().
 *
 * Bump QMP_PEER_VERSION for any incompatible change; a host that finds
 * a table of another version ignores the peer and says so.
 */
#ifndef NC_QMP_PEER_H
#define NC_QMP_PEER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <jansson.h>

#include "qmp.h"

#define QMP_PEER_VERSION 5
#define QMP_PEER_PLUGIN_SYMBOL "qmpdisk_peer_v5"

/* Lent by the host to its peer. */
struct qmp_host {
  void (*emit_event) (const char *name, json_t *data);
  void (*lock) (void);
  void (*unlock) (void);
};

/* What the filter tells the plugin about its nodes (the filter keeps
 * bitmaps and checkpoints per node).  Called with the monitor lock held.
 * The functions that can refuse return false after setting *ERR (its
 * desc is the reason, NULL if even that allocation failed); the caller
 * owns *ERR and clears it.
 */
struct qmp_node_hooks {
  /* May NODE be removed? */
  bool (*may_remove) (const char *node, struct qmp_error *err);
  /* NODE was added at run time with SIZE bytes.  False refuses the add
   * (e.g. saved state recorded another size).
   */
  bool (*added) (const char *node, uint64_t size, struct qmp_error *err);
  void (*removed) (const char *node);
  /* May NODE be resized?  Then resized gives its bitmaps the new
   * size: before the disk grows (so that they cover every byte a
   * connection can see; called again with the old size if growing
   * fails), after it shrinks.
   */
  bool (*may_resize) (const char *node, uint64_t size,
                      struct qmp_error *err);
  void (*resized) (const char *node, uint64_t size);
};

/* What tells a disk's file apart from another one, or from itself
 * changed, between two runs of nbdkit: the filter records it at a
 * clean shutdown and compares it at start-up
 * (filters/checkpoint/engines/disk-identity.h).  For a block device
 * only rdev and size mean anything.
 */
struct disk_identity {
  bool block;
  uint64_t dev, ino;            /* st_dev, st_ino */
  uint64_t rdev;                /* st_rdev */
  uint64_t size;                /* bytes */
  int64_t ctime_sec;            /* st_ctim */
  uint32_t ctime_nsec;
};

/* The identity of the file or block device that ST describes; SIZE is
 * used for a block device (whose st_size is 0).
 */
static inline void
disk_identity_from_stat (const struct stat *st, uint64_t size,
                         struct disk_identity *out)
{
  out->block = S_ISBLK (st->st_mode);
  out->dev = st->st_dev;
  out->ino = st->st_ino;
  out->rdev = out->block ? st->st_rdev : 0;
  out->size = out->block ? size : (uint64_t) st->st_size;
  out->ctime_sec = st->st_ctim.tv_sec;
  out->ctime_nsec = st->st_ctim.tv_nsec;
}

/* What the plugin tells the filter about its disks. */
struct qmp_disk_services {
  /* [node info] as query-named-block-nodes returns, without bitmaps. */
  json_t *(*list_nodes) (void);
  /* The node that export name NAME opens ("" = the default); a
   * malloc'ed name, or NULL if there is none.
   */
  char *(*resolve_export) (const char *name);
  /* Size of NODE; false if there is no such node. */
  bool (*node_size) (const char *node, uint64_t *size);
  void (*set_node_hooks) (const struct qmp_node_hooks *hooks);
  /* Name the export of the next shared context that this thread opens
   * (nbdkit_next_context_open with shared=1 cannot pass it): see
   * plugins/qmpdisk/qmpdisk.h.
   */
  void (*set_open_export) (const char *name);
  /* The identity of NODE's file or block device, from its open
   * descriptor: 1 when filled in, 0 when NODE has none (an NBD node,
   * or no such node), -1 with errno when fstat failed.
   */
  int (*node_identity) (const char *node, struct disk_identity *out);
};

struct qmp_peer {
  uint32_t version;                     /* QMP_PEER_VERSION */
  const struct qmp_command_set *commands;
  void (*attach) (const struct qmp_host *host);
  const struct qmp_disk_services *disks;  /* the plugin's; else NULL */
  /* The host's quit command ran: nbdkit is shutting down (see
   * qmp_on_quit).  May be NULL.
   */
  void (*quit) (void);
};

/* Find the other component's table; NULL when it is not loaded (stock
 * plugins export no such symbol) or of another version.
 */
extern const struct qmp_peer *qmp_find_peer (const char *symbol);

/* For building this component's own table: the attach function that
 * takes the host's event sender and lock.
 */
extern void qmp_attach (const struct qmp_host *host);
/* Runs this component's qmp_on_quit function, for the table's quit. */
extern void qmp_component_quit (void);
/* Has a host attached this component (its commands will be served)? */
extern bool qmp_attached (void);

#endif /* NC_QMP_PEER_H */
