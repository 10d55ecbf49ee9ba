/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The filter's parameters, start-up and shutdown, and the hooks through
 * which the qmpdisk plugin tells us of its disks (common/qmp/peer.h).
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "qmp.h"
#include "peer.h"
#include "server.h"
#include "core/checkpoint-chain.h"
#include "core/limits.h"
#include "core/node.h"
#include "engines/disk-identity.h"
#include "engines/job.h"
#include "engines/persist.h"
#include "features/pull-backup.h"
#include "features/push-backup.h"
#include "qmp/commands.h"
#include "checkpoint.h"

static char *qmp_path;          /* qmp= */
static char *state_dir;         /* state= */
static char *scratch_dir;       /* scratch= */
static const char *single_node_name = "disk";   /* node-name= */
static enum crash_safety crash_safety = CRASH_SAFETY_PROCESS;
/* The qmpdisk plugin's disks; NULL over any other plugin. */
static const struct qmp_disk_services *disk_services;

void
lifecycle_unload (void)
{
  free (qmp_path);
  free (state_dir);
  free (scratch_dir);
  disk_identity_free_paths ();
}

/* A node name as QEMU accepts it: a letter, then letters, digits and
 * "-._", at most 31 bytes.
 */
static bool
valid_node_name (const char *name)
{
  size_t i, n = strlen (name);

  if (n == 0 || n > 31 ||
      !((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z')))
    return false;
  for (i = 1; i < n; i++)
    if (!strchr ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                 "0123456789-._", name[i]))
      return false;
  return true;
}

static int
set_path (char **where, const char *value)
{
  free (*where);
  *where = nbdkit_absolute_path (value);
  return *where ? 0 : -1;
}

/* max-*=N: a limit of core/limits.h, 1 to LIMIT_MAX. */
static int
set_limit (unsigned *where, const char *key, const char *value)
{
  unsigned v;

  if (nbdkit_parse_unsigned (key, value, &v) == -1)
    return -1;
  if (v < 1 || v > LIMIT_MAX) {
    nbdkit_error ("checkpoint: %s=%s: must be 1 to %u", key, value,
                  LIMIT_MAX);
    return -1;
  }
  *where = v;
  return 0;
}

/* 0 when taken, 1 when the key is not ours, -1 on error. */
int
lifecycle_config (const char *key, const char *value)
{
  switch (qmp_server_config (key, value, &qmp_path)) {
  case 1: return 0;
  case -1: return -1;
  }
  if (strcmp (key, "state") == 0)
    return set_path (&state_dir, value);
  if (strcmp (key, "scratch") == 0)
    return set_path (&scratch_dir, value);
  if (strcmp (key, "max-bitmaps-per-disk") == 0)
    return set_limit (&limits.bitmaps_per_disk, key, value);
  if (strcmp (key, "max-checkpoints") == 0)
    return set_limit (&limits.checkpoints, key, value);
  if (strcmp (key, "max-backups") == 0)
    return set_limit (&limits.backups, key, value);
  if (strcmp (key, "max-jobs") == 0)
    return set_limit (&limits.jobs, key, value);
  if (strcmp (key, "max-backup-connections") == 0)
    return set_limit (&limits.backup_connections, key, value);
  if (strcmp (key, "crash-safety") == 0) {
    if (strcmp (value, "process") == 0)
      crash_safety = CRASH_SAFETY_PROCESS;
    else if (strcmp (value, "power") == 0)
      crash_safety = CRASH_SAFETY_POWER;
    else if (strcmp (value, "none") == 0)
      crash_safety = CRASH_SAFETY_NONE;
    else {
      nbdkit_error ("checkpoint: crash-safety=%s: expected process, power "
                    "or none", value);
      return -1;
    }
    return 0;
  }
  if (strcmp (key, "node-name") == 0) {
    if (!valid_node_name (value)) {
      nbdkit_error ("checkpoint: invalid node-name '%s': a letter, then "
                    "letters, digits, '-', '.' or '_', at most 31 bytes",
                    value);
      return -1;
    }
    single_node_name = value;   /* nbdkit keeps argv alive */
    return 0;
  }
  /* The plugin's (nbdkit's file plugin): for the disk's identity. */
  if (strcmp (key, "file") == 0) {
    CLEANUP_FREE char *abs = nbdkit_absolute_path (value);

    if (abs == NULL || disk_identity_add_path (abs) == -1)
      return -1;
  }
  return 1;
}

/* Hooks called by the plugin, with the monitor lock held. */

static bool
hook_may_remove (const char *name, struct qmp_error *err)
{
  struct node *n = nodes_find (name);

  if (n && push_backups_use_node (n)) {
    qmp_error (err, "Node '%s' is busy: block device is in use by block "
               "job: backup", name);
    return false;
  }
  if (n && (n->bitmaps || backups_use_node (n))) {
    qmp_error (err, "Node '%s' has %s: end or remove them first", name,
               backups_use_node (n) ? "active backups" : "dirty bitmaps");
    return false;
  }
  return true;
}

/* A disk added at run time: a node, with its saved bitmaps if any. */
static bool
hook_added (const char *name, uint64_t size, struct qmp_error *err)
{
  return nodes_add (name, size, err) != NULL;
}

static void
hook_removed (const char *name)
{
  struct node *n = nodes_find (name);

  if (n)
    nodes_remove (n);
}

static bool
hook_may_resize (const char *name, uint64_t size, struct qmp_error *err)
{
  struct node *n = nodes_find (name);
  struct dirty_bitmap *d;

  if (n && (backups_use_node (n) || push_backups_use_node (n))) {
    qmp_error (err, "Cannot resize '%s' during a backup", name);
    return false;
  }
  if (n && size < n->size)
    for (d = n->bitmaps; d; d = d->next)
      if (dirty_bitmap_busy (d)) {
        qmp_error (err, "Cannot shrink '%s' while bitmap '%s' is busy",
                   name, d->name);
        return false;
      }
  return true;
}

static void
hook_resized (const char *name, uint64_t size)
{
  struct node *n = nodes_find (name);

  if (n && nodes_resize (n, size) == -1)
    nbdkit_error ("checkpoint: resizing the bitmaps of '%s': out of memory: "
                  "those that could not follow are inconsistent from now on",
                  name);
}

static const struct qmp_node_hooks node_hooks = {
  .may_remove = hook_may_remove,
  .added = hook_added,
  .removed = hook_removed,
  .may_resize = hook_may_resize,
  .resized = hook_resized,
};

int
lifecycle_config_complete (void)
{
  const struct qmp_peer *peer = qmp_find_peer (QMP_PEER_PLUGIN_SYMBOL);
  static const struct job_host job_host = {
    qmp_lock, qmp_unlock, qmp_emit_event,
  };

  if (state_dir && persist_start (state_dir, crash_safety) == -1)
    return -1;
  backups_set_scratch_dir (scratch_dir ? scratch_dir : state_dir);
  push_backups_set_scratch_dir (scratch_dir ? scratch_dir : state_dir);
  jobs_set_host (&job_host);
  disk_services = peer ? peer->disks : NULL;
  /* Ours first, so that our query-named-block-nodes wins over the
   * plugin's; then the plugin's commands, before its .config_complete,
   * so that it knows a monitor will serve them (and may start with no
   * disks).
   */
  node_commands_register (disk_services);
  bitmap_commands_register ();
  checkpoint_commands_register ();
  transaction_commands_register ();
  backup_commands_register ();
  job_commands_register ();
  if (qmp_path)
    qmp_server_adopt_peer (QMP_PEER_PLUGIN_SYMBOL);
  if (disk_services) {
    disk_services->set_node_hooks (&node_hooks);
    disk_identity_use_service (disk_services->node_identity);
  }
  return 0;
}

int
lifecycle_get_ready (void)
{
  return qmp_path ? qmp_server_listen (qmp_path) : 0;
}

/* A stock plugin's disk: learn its size through a background context. */
static int
add_single_node (nbdkit_backend *backend, struct qmp_error *err)
{
  nbdkit_next *next = nbdkit_next_context_open (backend, 1, "", 1);
  int64_t size = -1;

  if (next == NULL) {
    qmp_error (err, "cannot open the plugin's disk");
    return -1;
  }
  if (next->prepare (next) == 0)
    size = next->get_size (next);
  next->finalize (next);
  nbdkit_next_context_close (next);
  if (size == -1) {
    qmp_error (err, "cannot get the size of the plugin's disk");
    return -1;
  }
  return nodes_add (single_node_name, size, err) ? 0 : -1;
}

static int
log_error (struct qmp_error *err)
{
  nbdkit_error ("checkpoint: %s", err->desc ? err->desc : "out of memory");
  qmp_error_clear (err);
  return -1;
}

/* The plugin's disks as nodes, each with its saved state; every disk
 * that cannot be added is named.
 */
static int
add_plugin_nodes (void)
{
  json_t *list = disk_services->list_nodes (), *info;
  struct qmp_error err = { 0 };
  size_t i;
  int r = 0;

  json_array_foreach (list, i, info) {
    const char *name = json_string_value (json_object_get (info, "node-name"));
    json_int_t size = json_integer_value (
      json_object_get (json_object_get (info, "image"), "virtual-size"));
    if (name == NULL)
      qmp_error (&err, "the plugin lists a disk without a name");
    if (name == NULL || nodes_add (name, size, &err) == NULL)
      r = log_error (&err);
  }
  json_decref (list);
  return r;
}

int
lifecycle_after_fork (nbdkit_backend *backend)
{
  struct qmp_error err = { 0 };
  int r;

  if (state_dir && persist_load_checkpoints () == -1)
    return -1;
  push_backups_set_backend (backend, disk_services
                            ? disk_services->set_open_export : NULL);
  if (disk_services)
    r = add_plugin_nodes ();
  else if ((r = add_single_node (backend, &err)) == -1)
    log_error (&err);
  if (r == -1)
    return -1;
  backup_commands_drop_pending ();
  return qmp_server_start ();
}

void
lifecycle_cleanup (void)
{
  qmp_server_stop ();
  jobs_cancel_all ();
  backups_end_all ();
  persist_save_all ();
  nodes_free_all ();
  checkpoints_free_all ();
}

/* Over a single-export plugin, the live disk answers to "" and to its
 * node name only: any other name (a backup export that has ended, one
 * that never was) must not reach the disk, whatever the plugin would
 * accept.
 */
char *
lifecycle_export_node (const char *exportname)
{
  if (disk_services)
    return disk_services->resolve_export (exportname);
  if (exportname[0] && strcmp (exportname, single_node_name) != 0)
    return NULL;
  return strdup (single_node_name);
}

bool
lifecycle_plugin_has_exports (void)
{
  return disk_services != NULL;
}
