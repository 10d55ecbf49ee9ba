/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "cleanup.h"
#include "qmp.h"
#include "peer.h"
#include "server.h"
#include "disks.h"
#include "qmpdisk.h"
#include "monitor.h"
#include "shutdown.h"

static char *qmp_path;
static const struct qmp_node_hooks *hooks;   /* the filter's, if any */

int
monitor_config (const char *key, const char *value, int *r)
{
  int n = qmp_server_config (key, value, &qmp_path);

  if (n == 0)
    return 0;
  *r = n == 1 ? 0 : -1;
  return 1;
}

static void
describe_disk (struct disk *d, void *list)
{
  json_array_append_new (list, json_pack (
    "{s:s,s:s,s:s,s:b,s:{s:I,s:s,s:s}}",
    "node-name", disk_node (d),
    "drv", disk_driver (d),
    "file", disk_path (d),
    "ro", disk_readonly (d),
    "image",
    "virtual-size", (json_int_t) disk_size (d),
    "filename", disk_path (d),
    "format", disk_driver (d)));
}

static json_t *
list_nodes (void)
{
  json_t *list = json_array ();

  disks_foreach (describe_disk, list);
  return list;
}

/* A monitor of our own, or the filter's that serves our commands. */
bool
monitor_present (void)
{
  return qmp_path != NULL || qmp_attached ();
}

static json_t *
query_named_block_nodes (json_t *args, struct qmp_error *err)
{
  return list_nodes ();
}

/* An NBD server as QEMU's SocketAddress names it, as a libnbd URI. */
static char *
nbd_uri (json_t *server, const char *export, struct qmp_error *err)
{
  static const struct qmp_arg unix_args[] = {
    { "type", QMP_STR, false, "\"unix\"." },
    { "path", QMP_STR, false, "The server's Unix socket." },
    { NULL }
  };
  static const struct qmp_arg inet_args[] = {
    { "type", QMP_STR, false, "\"inet\"." },
    { "host", QMP_STR, false, "The server's host name or address." },
    { "port", QMP_STR, false, "The server's port, a string as in QEMU." },
    { NULL }
  };
  const char *type = qmp_arg_str (server, "type", "");
  char *uri = NULL;
  int r;

  if (strcmp (type, "unix") == 0) {
    if (!qmp_check_args (unix_args, server, "server.", err))
      return NULL;
    r = asprintf (&uri, "nbd+unix:///%s?socket=%s", export,
                  qmp_arg_str (server, "path", ""));
  }
  else if (strcmp (type, "inet") == 0) {
    if (!qmp_check_args (inet_args, server, "server.", err))
      return NULL;
    r = asprintf (&uri, "nbd://%s:%s/%s", qmp_arg_str (server, "host", ""),
                  qmp_arg_str (server, "port", ""), export);
  }
  else {
    qmp_error (err, "Parameter 'server.type' does not accept value '%s'",
               type);
    return NULL;
  }
  if (r == -1) {
    qmp_error (err, "out of memory");
    return NULL;
  }
  return uri;
}

static json_t *
blockdev_add (json_t *args, struct qmp_error *err)
{
  const char *driver = qmp_arg_str (args, "driver", NULL);
  const char *node = qmp_arg_str (args, "node-name", NULL);
  bool readonly = qmp_arg_bool (args, "read-only", false);
  CLEANUP_FREE char *target = NULL;
  struct disk *d;

  if (strcmp (driver, "nbd") == 0) {
    if (!json_object_get (args, "server")) {
      qmp_error (err, "Parameter 'server' is missing");
      return NULL;
    }
    target = nbd_uri (json_object_get (args, "server"),
                      qmp_arg_str (args, "export", ""), err);
    if (target == NULL)
      return NULL;
  }
  else if (strcmp (driver, "file") == 0 || strcmp (driver, "host_device") == 0) {
    if (!qmp_arg_str (args, "filename", NULL)) {
      qmp_error (err, "Parameter 'filename' is missing");
      return NULL;
    }
    target = strdup (qmp_arg_str (args, "filename", NULL));
  }
  else {
    qmp_error (err, "Parameter 'driver' does not accept value '%s'", driver);
    return NULL;
  }
  if (target == NULL) {
    qmp_error (err, "out of memory");
    return NULL;
  }

  /* Opening can take long (an NBD server, a hung file system): not
   * under the monitor lock, so that other clients are served
   * meanwhile.  disks_insert checks the name again.
   */
  qmp_unlock ();
  d = disks_prepare (node, driver, target, readonly, err);
  qmp_lock ();
  if (d == NULL || disks_insert (d, err) == -1)
    return NULL;
  if (hooks) {
    bool ok;

    d = disks_get (node);
    ok = hooks->added (node, disk_size (d), err);
    disks_put (d);
    if (!ok) {
      struct qmp_error ignored = { 0 };

      disks_remove (node, &ignored);
      qmp_error_clear (&ignored);
      /* The filter's reason if it gave one (the first error stays). */
      qmp_error (err, "refused by the checkpoint filter");
      return NULL;
    }
  }
  return json_object ();
}

static json_t *
blockdev_del (json_t *args, struct qmp_error *err)
{
  const char *node = qmp_arg_str (args, "node-name", NULL);
  struct disk *d = disks_get (node);

  if (d == NULL || strcmp (node, "") == 0) {
    if (d)
      disks_put (d);
    qmp_error (err, "Failed to find node with node-name='%s'", node);
    return NULL;
  }
  disks_put (d);
  if (hooks && !hooks->may_remove (node, err)) {
    qmp_error (err, "Node is in use");
    return NULL;
  }
  if (disks_remove (node, err) == -1)
    return NULL;
  if (hooks)
    hooks->removed (node);
  return json_object ();
}

static json_t *
block_resize (json_t *args, struct qmp_error *err)
{
  const char *node = qmp_arg_str (args, "node-name",
                                  qmp_arg_str (args, "device", NULL));
  int64_t size = qmp_arg_int (args, "size", 0);
  struct disk *d;
  uint64_t old;
  bool grow;

  if (node == NULL) {
    qmp_error (err, "Either device or node-name must be set");
    return NULL;
  }
  d = node[0] ? disks_get (node) : NULL;
  if (d == NULL) {
    qmp_error (err, "Cannot find device='%s' nor node-name='%s'", node, node);
    return NULL;
  }
  old = disk_size (d);
  disks_put (d);
  if (hooks && !hooks->may_resize (node, size, err)) {
    qmp_error (err, "Node is in use");
    return NULL;
  }
  /* The bitmaps must cover every byte a connection can see: they grow
   * before the disk does, and shrink after it (which disks_resize
   * refuses while connections are open).
   */
  grow = (uint64_t) size > old;
  if (hooks && grow)
    hooks->resized (node, size);
  if (disks_resize (node, size, err) == -1) {
    if (hooks && grow)
      hooks->resized (node, old);
    return NULL;
  }
  if (hooks && !grow)
    hooks->resized (node, size);
  return json_object ();
}

static const struct qmp_arg blockdev_add_args[] = {
  { "driver", QMP_STR, false,
    "\"file\" (a regular file), \"host_device\" (a block device) or "
    "\"nbd\" (an export of an NBD server, through libnbd)." },
  { "node-name", QMP_STR, false,
    "The new node's name, which is also its NBD export name: QEMU's "
    "node name rules (a letter first, then letters, digits, '-', '.' "
    "and '_'; at most 31 characters)." },
  { "filename", QMP_STR, true,
    "For file and host_device: the path (required for them)." },
  { "server", QMP_OBJECT, true,
    "For nbd (required): QEMU's SocketAddress, {\"type\": \"unix\", "
    "\"path\"} or {\"type\": \"inet\", \"host\", \"port\"}." },
  { "export", QMP_STR, true,
    "For nbd: the export name on that server (\"\" when absent)." },
  { "read-only", QMP_BOOL, true,
    "Open the node read-only (false)." },
  { NULL }
};

static const struct qmp_arg blockdev_del_args[] = {
  { "node-name", QMP_STR, false, "The node to remove." },
  { NULL }
};

static const struct qmp_arg block_resize_args[] = {
  { "device", QMP_STR, true,
    "The node, by QEMU's older name (one of device and node-name must "
    "be given; node-name wins)." },
  { "node-name", QMP_STR, true, "The node." },
  { "size", QMP_UINT64, false,
    "The new size in bytes, a multiple of 512." },
  { NULL }
};

static const struct qmp_arg query_nodes_args[] = {
  { "flat", QMP_BOOL, true, "Accepted, no effect (every node is listed)." },
  { NULL }
};

static const struct qmp_command commands[] = {
  { "blockdev-add", blockdev_add_args, blockdev_add,
    "Open a new node and serve it as an NBD export of its name.  With "
    "the checkpoint filter, the filter takes the node on too (it may "
    "refuse it).  Opening does not hold the monitor lock: other clients "
    "are served meanwhile.",
    "{}.",
    "\"Parameter 'filename' is missing\", \"Parameter 'server' is "
    "missing\"; \"Parameter 'driver' does not accept value 'D'\"; "
    "\"Parameter 'server.type' does not accept value 'T'\" and the "
    "server's own argument errors (prefix 'server.'); \"Invalid "
    "node-name: 'N'\"; \"Node name too long: 'N' (at most 31 "
    "characters)\"; \"Duplicate nodes with node-name='N'\"; \"'host_device' "
    "driver requires 'F' to be a block device\"; \"Could not open 'F': "
    "REASON\" (a file, or an NBD server that cannot be reached, is "
    "read-only for a writable node, or is this nbdkit itself); \"nbdkit "
    "is shutting down\"; the checkpoint filter's reason, or \"refused by "
    "the checkpoint filter\"." },
  { "blockdev-del", blockdev_del_args, blockdev_del,
    "Remove a node: its export ends.  Refused while NBD connections "
    "are open on it or while the checkpoint filter has bitmaps, "
    "checkpoints or backups on it.",
    "{}.",
    "\"Failed to find node with node-name='N'\"; \"Node 'N' is busy: K "
    "open connection(s)\"; the checkpoint filter's reason, or \"Node is "
    "in use\"." },
  { "block_resize", block_resize_args, block_resize,
    "Grow or shrink a node (file and host_device nodes).  Its bitmaps "
    "grow with it; a shrink is refused while connections are open.",
    "{}.",
    "\"Either device or node-name must be set\"; \"Cannot find "
    "device='N' nor node-name='N'\" (QEMU 7.2 names only the argument "
    "given); \"Invalid size S for node 'N'\"; \"Block node is "
    "read-only\"; \"Cannot shrink node 'N' while it has K open "
    "connection(s)\"; \"Cannot resize NBD nodes\"; \"Could not resize "
    "'F': REASON\"; the checkpoint filter's reason, or \"Node is in "
    "use\"." },
  { "query-named-block-nodes", query_nodes_args, query_named_block_nodes,
    "Every node, in QEMU's BlockDeviceInfo shape.  With the checkpoint "
    "filter, the filter's query-named-block-nodes answers instead (it "
    "adds the dirty bitmaps).",
    "[{\"node-name\", \"drv\" (file, host_device, nbd), \"file\" (the "
    "path or the NBD URI), \"ro\", \"image\": {\"virtual-size\"}}].",
    NULL },
  { NULL }
};

static const struct qmp_command_set command_set = { "qmpdisk", commands };

void
monitor_register (void)
{
  qmp_register_commands (&command_set);
  qmp_on_quit (shutdown_begin);
}

/* Services for the checkpoint filter (see common/qmp/peer.h). */

static char *
resolve_export (const char *name)
{
  struct disk *d = disks_get (name);
  char *node;

  if (d == NULL)
    return NULL;
  node = strdup (disk_node (d));
  disks_put (d);
  return node;
}

static bool
node_size (const char *node, uint64_t *size)
{
  struct disk *d = node[0] ? disks_get (node) : NULL;

  if (d == NULL)
    return false;
  *size = disk_size (d);
  disks_put (d);
  return true;
}

static int
node_identity (const char *node, struct disk_identity *out)
{
  struct disk *d = node[0] ? disks_get (node) : NULL;
  struct backend *b;
  struct stat st;
  int r = 0;

  if (d == NULL)
    return 0;
  b = disk_backend (d);
  if (b->ops->identify) {
    r = b->ops->identify (b, &st) == 0 ? 1 : -1;
    if (r == 1)
      disk_identity_from_stat (&st, disk_size (d), out);
  }
  disks_put (d);
  return r;
}

static void
set_node_hooks (const struct qmp_node_hooks *h)
{
  hooks = h;
}

static const struct qmp_disk_services disk_services = {
  .list_nodes = list_nodes,
  .resolve_export = resolve_export,
  .node_size = node_size,
  .set_node_hooks = set_node_hooks,
  .set_open_export = qmpdisk_set_open_export,
  .node_identity = node_identity,
};

__attribute__ ((visibility ("default")))
const struct qmp_peer qmpdisk_peer_v5 = {
  .version = QMP_PEER_VERSION,
  .commands = &command_set,
  .attach = qmp_attach,
  .disks = &disk_services,
  .quit = qmp_component_quit,
};

int
monitor_get_ready (void)
{
  return qmp_path ? qmp_server_listen (qmp_path) : 0;
}

int
monitor_after_fork (void)
{
  return qmp_server_start ();
}

void
monitor_cleanup (void)
{
  qmp_server_stop ();
  free (qmp_path);
  qmp_path = NULL;
}
