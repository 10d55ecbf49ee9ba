/* nbdkit-checkpoint-filter: dirty bitmaps, checkpoints and backups for
 * the disks of the plugin below, driven through a QMP monitor.
 *
 * This file holds the nbdkit callbacks: parameters, the lifecycle of
 * the monitor, and the data path of the live disk exports.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "cleanup.h"
#include "qmp.h"
#include "server.h"
#include "state.h"
#include "nodes.h"
#include "bitmaps.h"
#include "checkpoints.h"
#include "persist.h"
#include "transaction.h"
#include "backup.h"
#include "monitor.h"

static char *qmp_path;          /* qmp= */
static char *state_dir;         /* state= */
static char *scratch_dir;       /* scratch= */
static int thread_model;        /* the final one, from .get_ready */

static void
checkpoint_unload (void)
{
  free (qmp_path);
  free (state_dir);
  free (scratch_dir);
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
checkpoint_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
                   const char *key, const char *value)
{
  switch (qmp_server_config (key, value, &qmp_path)) {
  case 1: return 0;
  case -1: return -1;
  }
  if (strcmp (key, "state") == 0) {
    free (state_dir);
    state_dir = nbdkit_absolute_path (value);
    return state_dir ? 0 : -1;
  }
  if (strcmp (key, "scratch") == 0) {
    free (scratch_dir);
    scratch_dir = nbdkit_absolute_path (value);
    return scratch_dir ? 0 : -1;
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
  return next (nxdata, key, value);
}

#define checkpoint_config_help \
  QMP_SERVER_CONFIG_HELP "\n" \
  "state=<DIR>          Keep bitmaps and checkpoints in this directory.\n" \
  "scratch=<DIR>        Put backups' scratch files here (default: state=).\n" \
  "node-name=<NAME>     Node name of a single-export plugin's disk."

static void
adopt_plugin (void)
{
  const struct qmp_peer *peer;

  peer = qmp_path ? qmp_server_adopt_peer (QMP_PEER_PLUGIN_SYMBOL)
                  : qmp_find_peer (QMP_PEER_PLUGIN_SYMBOL);
  if (peer && peer->disks) {
    disk_services = peer->disks;
    disk_services->set_node_hooks (&node_hooks);
  }
}

static int
checkpoint_config_complete (nbdkit_next_config_complete *next,
                            nbdkit_backend *nxdata)
{
  if (state_dir && persist_set_dir (state_dir) == -1)
    return -1;
  backup_set_scratch_dir (scratch_dir ? scratch_dir : state_dir);
  monitor_register_commands ();
  bitmap_register_commands ();
  checkpoint_register_commands ();
  transaction_register_command ();
  backup_register_commands ();
  /* Before the plugin's .config_complete: it then knows that a
   * monitor will serve its commands (and may start with no disks).
   */
  adopt_plugin ();
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
  thread_model = model;
  if (model == NBDKIT_THREAD_MODEL_SERIALIZE_CONNECTIONS) {
    nbdkit_error ("checkpoint: the plugin serialises connections, which "
                  "the filter's background work would deadlock on");
    return -1;
  }
  if (qmp_path && qmp_server_listen (qmp_path) == -1)
    return -1;
  return 0;
}

/* A stock plugin's disk: learn its size through a background context. */
static int
init_single_node (nbdkit_backend *backend)
{
  nbdkit_next *next = nbdkit_next_context_open (backend, 1, "", 1);
  int64_t size = -1;

  if (next == NULL) {
    nbdkit_error ("checkpoint: cannot open the plugin's disk");
    return -1;
  }
  if (next->prepare (next) == 0)
    size = next->get_size (next);
  next->finalize (next);
  nbdkit_next_context_close (next);
  if (size == -1) {
    nbdkit_error ("checkpoint: cannot get the size of the plugin's disk");
    return -1;
  }
  return nodes_init_single (size);
}

static void
load_node_state (struct node *n, void *failed)
{
  CLEANUP_FREE char *why = NULL;

  if (persist_load_node (n, &why) == -1) {
    nbdkit_error ("checkpoint: %s", why ? why : "out of memory");
    * (bool *) failed = true;
  }
}

static int
checkpoint_after_fork (nbdkit_backend *backend)
{
  bool failed = false;
  int r;

  if (persist_load_checkpoints () == -1)
    return -1;
  r = disk_services ? nodes_init_from_plugin () : init_single_node (backend);
  if (r == -1)
    return -1;
  nodes_foreach (load_node_state, &failed);
  if (failed)
    return -1;
  return qmp_server_start ();
}

static void
checkpoint_cleanup (nbdkit_backend *backend)
{
  qmp_server_stop ();
  backups_end_all ();
  persist_save_all ();
  nodes_free_all ();
  checkpoints_free_all ();
}

/* A connection: to a live disk (node), or to a backup export (bd),
 * which reads the disk through a read-only plugin connection.
 */
struct handle {
  struct node *node;
  struct backup_disk *bd;
};

static int
checkpoint_list_exports (nbdkit_next_list_exports *next,
                         nbdkit_backend *nxdata, int readonly, int is_tls,
                         struct nbdkit_exports *exports)
{
  if (next (nxdata, readonly, exports) == -1)
    return -1;
  backup_list_exports (exports);
  return 0;
}

static void *
checkpoint_open (nbdkit_next_open *next, nbdkit_context *ctx,
                 int readonly, const char *exportname, int is_tls)
{
  struct handle *h = calloc (1, sizeof *h);

  if (h == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  h->bd = backup_open (exportname);
  if (h->bd) {
    if (next (ctx, 1, disk_services ? h->bd->node->name : "") == -1) {
      backup_close (h->bd);
      free (h);
      return NULL;
    }
    return h;
  }
  /* Node names never hold '@': such a name is a backup export that
   * has ended (or never was), and must not reach the live disk.
   */
  if (strchr (exportname, '@')) {
    nbdkit_error ("checkpoint: no such export '%s' (ended backup?)",
                  exportname);
    free (h);
    return NULL;
  }
  if (next (ctx, readonly, exportname) == -1) {
    free (h);
    return NULL;
  }
  h->node = nodes_open (exportname);
  if (h->node == NULL) {
    nbdkit_error ("checkpoint: no disk for export '%s'", exportname);
    free (h);
    return NULL;
  }
  return h;
}

static void
checkpoint_close (void *handle)
{
  struct handle *h = handle;

  if (h->bd)
    backup_close (h->bd);
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

  return h->bd && size >= 0 ? (int64_t) h->bd->size : size;
}

static int
checkpoint_can_write (nbdkit_next *next, void *handle)
{
  struct handle *h = handle;
  int r = next->can_write (next);

  return h->bd && r >= 0 ? 0 : r;
}

static int
checkpoint_can_extents (nbdkit_next *next, void *handle)
{
  struct handle *h = handle;
  int r = next->can_extents (next);

  return h->bd && r >= 0 ? 1 : r;
}

static int
checkpoint_pread (nbdkit_next *next, void *handle, void *buf,
                  uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  struct handle *h = handle;

  if (h->bd)
    return backup_pread (next, h->bd, buf, count, offset, err);
  return next->pread (next, buf, count, offset, flags, err);
}

static int
checkpoint_extents (nbdkit_next *next, void *handle, uint32_t count,
                    uint64_t offset, uint32_t flags,
                    struct nbdkit_extents *extents, int *err)
{
  struct handle *h = handle;

  if (h->bd)
    return backup_extents (next, h->bd, count, offset, flags, extents, err);
  return next->extents (next, count, offset, flags, extents, err);
}

/* Before a guest write, zero or trim passes down: mark the recording
 * bitmaps, then save what backups need.  On success the node's barrier
 * is held until write_end.
 */
static int
write_begin (nbdkit_next *next, struct handle *h, uint32_t count,
             uint64_t offset, int *err)
{
  if (nodes_write_begin (h->node, offset, count) == -1) {
    *err = errno;
    nbdkit_error ("checkpoint: marking bitmaps: %m");
    return -1;
  }
  if (h->node->backups &&
      backup_before_write (next, h->node, count, offset, err) == -1) {
    nodes_write_end (h->node);
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
  nodes_write_end (h->node);
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
  nodes_write_end (h->node);
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
  nodes_write_end (h->node);
  return r;
}

static struct nbdkit_filter filter = {
  .name = "checkpoint",
  .longname = "nbdkit checkpoint filter",
  .unload = checkpoint_unload,
  .config = checkpoint_config,
  .config_complete = checkpoint_config_complete,
  .config_help = checkpoint_config_help,
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
