/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* nbdkit-checkpoint-filter: the nbdkit callbacks.  The layers beneath
 * are described in checkpoint.h; parameters and start-up are in
 * lifecycle.c.  A connection is to a live disk (a node: every write
 * passes the node's write path) or to a backup export (read-only, the
 * frozen view, through a read-only plugin connection).
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "core/node.h"
#include "features/pull-backup.h"
#include "checkpoint.h"

static void
checkpoint_unload (void)
{
  lifecycle_unload ();
}

static int
checkpoint_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
                   const char *key, const char *value)
{
  int r = lifecycle_config (key, value);

  return r == 1 ? next (nxdata, key, value) : r;
}

static int
checkpoint_config_complete (nbdkit_next_config_complete *next,
                            nbdkit_backend *nxdata)
{
  if (lifecycle_config_complete () == -1)
    return -1;
  return next (nxdata);
}

static int
checkpoint_thread_model (void)
{
  return NBDKIT_THREAD_MODEL_PARALLEL;
}

static int
checkpoint_get_ready (int model)
{
  if (model == NBDKIT_THREAD_MODEL_SERIALIZE_CONNECTIONS) {
    nbdkit_error ("checkpoint: the plugin serialises connections, which "
                  "the filter's background work would deadlock on");
    return -1;
  }
  return lifecycle_get_ready ();
}

static int
checkpoint_after_fork (nbdkit_backend *backend)
{
  return lifecycle_after_fork (backend);
}

static void
checkpoint_cleanup (nbdkit_backend *backend)
{
  lifecycle_cleanup ();
}

struct handle {
  struct node *node;            /* a live disk, or */
  struct backup_export *export; /* a backup export */
};

static int
checkpoint_list_exports (nbdkit_next_list_exports *next,
                         nbdkit_backend *nxdata, int readonly, int is_tls,
                         struct nbdkit_exports *exports)
{
  if (next (nxdata, readonly, exports) == -1)
    return -1;
  backup_exports_list (exports);
  return 0;
}

static int
open_backup_export (nbdkit_next_open *next, nbdkit_context *ctx,
                    struct handle *h)
{
  const char *node = backup_export_node (h->export);

  if (next (ctx, 1, lifecycle_plugin_has_exports () ? node : "") == -1) {
    backup_export_close (h->export);
    return -1;
  }
  return 0;
}

static int
open_node (nbdkit_next_open *next, nbdkit_context *ctx, int readonly,
           const char *exportname, struct handle *h)
{
  CLEANUP_FREE char *name = NULL;

  /* Node names never hold '@': such a name is a backup export that
   * has ended (or never was), and must not reach the live disk.
   */
  if (strchr (exportname, '@')) {
    nbdkit_error ("checkpoint: no such export '%s' (ended backup?)",
                  exportname);
    return -1;
  }
  name = lifecycle_export_node (exportname);
  if (name == NULL) {
    nbdkit_error ("checkpoint: no such export '%s' (ended backup?)",
                  exportname);
    return -1;
  }
  if (next (ctx, readonly, exportname) == -1)
    return -1;
  h->node = nodes_open (name);
  if (h->node == NULL) {
    nbdkit_error ("checkpoint: no disk for export '%s'", exportname);
    return -1;
  }
  return 0;
}

static void *
checkpoint_open (nbdkit_next_open *next, nbdkit_context *ctx,
                 int readonly, const char *exportname, int is_tls)
{
  struct handle *h = calloc (1, sizeof *h);
  int r;

  if (h == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  h->export = backup_export_open (exportname);
  r = h->export ? open_backup_export (next, ctx, h)
                : open_node (next, ctx, readonly, exportname, h);
  if (r == -1) {
    free (h);
    return NULL;
  }
  return h;
}

static void
checkpoint_close (void *handle)
{
  struct handle *h = handle;

  if (h->export)
    backup_export_close (h->export);
  else
    nodes_close (h->node);
  free (h);
}

/* Backup exports: the frozen size, read-only, block status always.
 * The plugin is still asked: nbdkit checks its answers on every call.
 */
static int64_t
checkpoint_get_size (nbdkit_next *next, void *handle)
{
  struct handle *h = handle;
  int64_t size = next->get_size (next);

  return h->export && size >= 0 ? (int64_t) backup_export_size (h->export)
                                : size;
}

static int
checkpoint_can_write (nbdkit_next *next, void *handle)
{
  struct handle *h = handle;
  int r = next->can_write (next);

  return h->export && r >= 0 ? 0 : r;
}

static int
checkpoint_can_extents (nbdkit_next *next, void *handle)
{
  struct handle *h = handle;
  int r = next->can_extents (next);

  return h->export && r >= 0 ? 1 : r;
}

static int
checkpoint_pread (nbdkit_next *next, void *handle, void *buf,
                  uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  struct handle *h = handle;

  if (h->export)
    return backup_export_pread (h->export, next, buf, count, offset, err);
  return next->pread (next, buf, count, offset, flags, err);
}

static int
checkpoint_extents (nbdkit_next *next, void *handle, uint32_t count,
                    uint64_t offset, uint32_t flags,
                    struct nbdkit_extents *extents, int *err)
{
  struct handle *h = handle;

  if (h->export)
    return backup_export_extents (h->export, next, count, offset, flags,
                                  extents, err);
  return next->extents (next, count, offset, flags, extents, err);
}

/* Before a guest write, zero or trim passes down: mark the recording
 * bitmaps, then run the node's write hooks (copy-before-write).  On
 * success the node's barrier is held until node_write_end.
 */
static int
write_begin (nbdkit_next *next, struct handle *h, uint32_t count,
             uint64_t offset, int *err)
{
  if (node_write_begin (h->node, offset, count) == -1) {
    *err = errno;
    nbdkit_error ("checkpoint: marking bitmaps: %m");
    return -1;
  }
  if (node_run_write_hooks (h->node, next, offset, count, err) == -1) {
    node_write_end (h->node);
    return -1;
  }
  return 0;
}

static int
checkpoint_pwrite (nbdkit_next *next, void *handle, const void *buf,
                   uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  struct handle *h = handle;
  int r;

  if (write_begin (next, h, count, offset, err) == -1)
    return -1;
  r = next->pwrite (next, buf, count, offset, flags, err);
  node_write_end (h->node);
  return r;
}

static int
checkpoint_zero (nbdkit_next *next, void *handle, uint32_t count,
                 uint64_t offset, uint32_t flags, int *err)
{
  struct handle *h = handle;
  int r;

  if (write_begin (next, h, count, offset, err) == -1)
    return -1;
  r = next->zero (next, count, offset, flags, err);
  node_write_end (h->node);
  return r;
}

static int
checkpoint_trim (nbdkit_next *next, void *handle, uint32_t count,
                 uint64_t offset, uint32_t flags, int *err)
{
  struct handle *h = handle;
  int r;

  if (write_begin (next, h, count, offset, err) == -1)
    return -1;
  r = next->trim (next, count, offset, flags, err);
  node_write_end (h->node);
  return r;
}

static struct nbdkit_filter filter = {
  .name = "checkpoint",
  .longname = "nbdkit checkpoint filter",
  .unload = checkpoint_unload,
  .config = checkpoint_config,
  .config_complete = checkpoint_config_complete,
  .config_help = lifecycle_config_help,
  .thread_model = checkpoint_thread_model,
  .get_ready = checkpoint_get_ready,
  .after_fork = checkpoint_after_fork,
  .cleanup = checkpoint_cleanup,
  .open = checkpoint_open,
  .close = checkpoint_close,
  .list_exports = checkpoint_list_exports,
  .get_size = checkpoint_get_size,
  .can_write = checkpoint_can_write,
  .can_extents = checkpoint_can_extents,
  .pread = checkpoint_pread,
  .extents = checkpoint_extents,
  .pwrite = checkpoint_pwrite,
  .zero = checkpoint_zero,
  .trim = checkpoint_trim,
};

NBDKIT_REGISTER_FILTER (filter)
