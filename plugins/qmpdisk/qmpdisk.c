/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* nbdkit-qmpdisk-plugin: the nbdkit callbacks.
 *
 * Parameters, exports and connections; each connection holds a
 * reference to its disk and calls the disk's backend directly.
 */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <inttypes.h>
#include <string.h>
#include <errno.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "cleanup.h"
#include "qmp.h"
#include "backend.h"
#include "monitor.h"
#include "server.h"
#include "disks.h"
#include "qmpdisk.h"
#include "shutdown.h"

/* Export name for the next .open in this thread (see qmpdisk.h). */
static __thread const char *open_export;

void
qmpdisk_set_open_export (const char *name)
{
  open_export = name;
}

/* disk=NODE:PATH */
static int
add_disk_param (const char *value)
{
  const char *colon = strchr (value, ':');
  CLEANUP_FREE char *node = NULL;
  CLEANUP_FREE char *path = NULL;
  struct qmp_error err = { 0 };

  if (colon == NULL) {
    nbdkit_error ("disk=%s: expected NODE:PATH, e.g. disk=sda:/dev/sda",
                  value);
    return -1;
  }
  if (colon[1] == '\0') {
    nbdkit_error ("disk=%s: PATH is missing after ':'", value);
    return -1;
  }
  node = strndup (value, colon - value);
  if (node == NULL) {
    nbdkit_error ("strndup: %m");
    return -1;
  }
  /* nbdkit changes directory to / when it becomes a daemon. */
  path = nbdkit_absolute_path (colon + 1);
  if (path == NULL)
    return -1;

  if (disks_add_from_cmdline (node, path, &err) == -1) {
    nbdkit_error ("disk=%s: %s", value,
                  err.desc ? err.desc : strerror (ENOMEM));
    qmp_error_clear (&err);
    return -1;
  }
  return 0;
}

static int
set_connect_timeout (const char *value)
{
  unsigned t;

  if (nbdkit_parse_unsigned ("connect-timeout", value, &t) == -1)
    return -1;
  if (t < 1 || t > 86400) {
    nbdkit_error ("connect-timeout=%s: expected 1 to 86400 seconds", value);
    return -1;
  }
  nbd_backend_set_timeout (t);
  return 0;
}

static int
qmpdisk_config (const char *key, const char *value)
{
  int r;

  if (strcmp (key, "disk") == 0)
    return add_disk_param (value);
  if (strcmp (key, "connect-timeout") == 0)
    return set_connect_timeout (value);
  if (monitor_config (key, value, &r))
    return r;

  nbdkit_error ("unknown parameter '%s'", key);
  return -1;
}

/* Disks may all come later through the monitor, if there is one. */
static int
qmpdisk_config_complete (void)
{
  if (disks_count () == 0 && !monitor_present ()) {
    nbdkit_error ("no disks: give at least one disk=NODE:PATH "
                  "(or a monitor, qmp=PATH, to add them later)");
    return -1;
  }
  nbd_backend_init ();
  monitor_register ();
  return 0;
}

#define qmpdisk_config_help \
  "disk=NODE:PATH       (repeatable) Serve PATH as export NODE.\n" \
  QMP_SERVER_CONFIG_HELP "\n" \
  "connect-timeout=SECONDS  Limit for connecting to the NBD server of\n" \
  "                     an nbd node (default 10)."

static int
qmpdisk_get_ready (void)
{
  return monitor_get_ready ();
}

static int
qmpdisk_after_fork (void)
{
  if (shutdown_watch_start () == -1)
    return -1;
  return monitor_after_fork ();
}

static void
qmpdisk_cleanup (void)
{
  monitor_cleanup ();
  shutdown_watch_stop ();
  disks_cleanup ();
}

struct list_data {
  struct nbdkit_exports *exports;
  int r;
};

static void
list_one (struct disk *d, void *opaque)
{
  struct list_data *data = opaque;

  if (data->r == 0)
    data->r = nbdkit_add_export (data->exports, disk_node (d), disk_path (d));
}

static int
qmpdisk_list_exports (int readonly, int is_tls,
                      struct nbdkit_exports *exports)
{
  struct list_data data = { .exports = exports };

  disks_foreach (list_one, &data);
  return data.r;
}

/* The first disk, so that clients learn its real name. */
static const char *
qmpdisk_default_export (int readonly, int is_tls)
{
  struct disk *d = disks_get ("");
  const char *name;

  if (d == NULL) {
    nbdkit_error ("no disks: there is no default export");
    return NULL;
  }
  name = nbdkit_strdup_intern (disk_node (d));
  disks_put (d);
  return name;
}

struct handle {
  struct disk *disk;
  struct backend *b;            /* of disk, for the data path */
  bool readonly;
};

static void *
qmpdisk_open (int readonly)
{
  const char *name = open_export;
  struct handle *h;

  open_export = NULL;
  if (name == NULL)
    name = nbdkit_export_name ();
  if (name == NULL) {
    nbdkit_error ("cannot tell which export to open: shared contexts must "
                  "name it with qmpdisk_set_open_export");
    return NULL;
  }

  h = malloc (sizeof *h);
  if (h == NULL) {
    nbdkit_error ("malloc: %m");
    return NULL;
  }
  h->readonly = readonly;
  h->disk = disks_open (name, &h->readonly);
  if (h->disk == NULL) {
    free (h);
    return NULL;
  }
  h->b = disk_backend (h->disk);
  return h;
}

static void
qmpdisk_close (void *handle)
{
  struct handle *h = handle;

  disks_close (h->disk);
  free (h);
}

static const char *
qmpdisk_export_description (void *handle)
{
  struct handle *h = handle;

  return disk_path (h->disk);   /* lives as long as the handle */
}

static int64_t
qmpdisk_get_size (void *handle)
{
  struct handle *h = handle;

  return disk_size (h->disk);
}

static int
qmpdisk_block_size (void *handle,
                    uint32_t *minimum, uint32_t *preferred, uint32_t *maximum)
{
  struct handle *h = handle;

  *minimum = h->b->block_min;
  *preferred = h->b->block_pref;
  *maximum = h->b->block_max;
  return 0;
}

static int
qmpdisk_can_write (void *handle)
{
  struct handle *h = handle;

  return !h->readonly;
}

static int
qmpdisk_can_flush (void *handle)
{
  struct handle *h = handle;

  return h->b->can_flush;
}

static int
qmpdisk_can_trim (void *handle)
{
  struct handle *h = handle;

  return h->b->can_trim;
}

/* The backends fail with ENOTSUP when nbdkit should write zeroes, and
 * refuse fast zeroes they cannot do quickly.
 */
static int
qmpdisk_can_zero (void *handle)
{
  return 1;
}

static int
qmpdisk_can_fast_zero (void *handle)
{
  return 1;
}

static int
qmpdisk_can_fua (void *handle)
{
  struct handle *h = handle;

  return h->b->can_fua ? NBDKIT_FUA_NATIVE : NBDKIT_FUA_NONE;
}

/* Every connection to a disk shares one backend, so a flush on any
 * of them covers the writes completed on all of them.
 */
static int
qmpdisk_can_multi_conn (void *handle)
{
  return 1;
}

static int
qmpdisk_can_extents (void *handle)
{
  return 1;
}

static int
qmpdisk_can_cache (void *handle)
{
  struct handle *h = handle;

  return h->b->can_cache ? NBDKIT_CACHE_NATIVE : NBDKIT_CACHE_NONE;
}

static int
qmpdisk_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
               uint32_t flags)
{
  struct handle *h = handle;

  return h->b->ops->pread (h->b, buf, count, offset);
}

/* A write past the disk's current size would grow a file behind the
 * back of the bitmaps (which follow the disk's size): refuse it, even
 * if the connection saw a larger size.  disks_resize refuses to
 * shrink a disk with open connections, so this is a second line.
 */
static int
check_range (struct handle *h, const char *op, uint32_t count,
             uint64_t offset, int err)
{
  uint64_t size = disk_size (h->disk);

  if (offset <= size && count <= size - offset)
    return 0;
  nbdkit_error ("%s: %s of %" PRIu32 " bytes at offset %" PRIu64
                " is past the end of the disk (%" PRIu64 " bytes)",
                disk_node (h->disk), op, count, offset, size);
  nbdkit_set_error (err);
  return -1;
}

static int
qmpdisk_pwrite (void *handle, const void *buf, uint32_t count,
                uint64_t offset, uint32_t flags)
{
  struct handle *h = handle;

  if (check_range (h, "write", count, offset, ENOSPC) == -1)
    return -1;
  return h->b->ops->pwrite (h->b, buf, count, offset, flags);
}

static int
qmpdisk_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct handle *h = handle;

  if (check_range (h, "zero", count, offset, ENOSPC) == -1)
    return -1;
  return h->b->ops->zero (h->b, count, offset, flags);
}

static int
qmpdisk_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct handle *h = handle;

  if (check_range (h, "trim", count, offset, EINVAL) == -1)
    return -1;
  return h->b->ops->trim (h->b, count, offset, flags);
}

static int
qmpdisk_flush (void *handle, uint32_t flags)
{
  struct handle *h = handle;

  return h->b->ops->flush (h->b);
}

static int
qmpdisk_extents (void *handle, uint32_t count, uint64_t offset,
                 uint32_t flags, struct nbdkit_extents *extents)
{
  struct handle *h = handle;

  return h->b->ops->extents (h->b, count, offset, flags, extents);
}

static int
qmpdisk_cache (void *handle, uint32_t count, uint64_t offset,
               uint32_t flags)
{
  struct handle *h = handle;

  return h->b->ops->cache (h->b, count, offset);
}

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static struct nbdkit_plugin plugin = {
  .name               = "qmpdisk",
  .longname           = "nbdkit QMP-managed disks plugin",
  .version            = PACKAGE_VERSION,
  .config             = qmpdisk_config,
  .config_complete    = qmpdisk_config_complete,
  .config_help        = qmpdisk_config_help,
  .magic_config_key   = "disk",
  .get_ready          = qmpdisk_get_ready,
  .after_fork         = qmpdisk_after_fork,
  .cleanup            = qmpdisk_cleanup,
  .list_exports       = qmpdisk_list_exports,
  .default_export     = qmpdisk_default_export,
  .open               = qmpdisk_open,
  .close              = qmpdisk_close,
  .export_description = qmpdisk_export_description,
  .get_size           = qmpdisk_get_size,
  .block_size         = qmpdisk_block_size,
  .can_write          = qmpdisk_can_write,
  .can_flush          = qmpdisk_can_flush,
  .can_trim           = qmpdisk_can_trim,
  .can_zero           = qmpdisk_can_zero,
  .can_fast_zero      = qmpdisk_can_fast_zero,
  .can_fua            = qmpdisk_can_fua,
  .can_multi_conn     = qmpdisk_can_multi_conn,
  .can_extents        = qmpdisk_can_extents,
  .can_cache          = qmpdisk_can_cache,
  .pread              = qmpdisk_pread,
  .pwrite             = qmpdisk_pwrite,
  .zero               = qmpdisk_zero,
  .trim               = qmpdisk_trim,
  .flush              = qmpdisk_flush,
  .extents            = qmpdisk_extents,
  .cache              = qmpdisk_cache,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN (plugin)
