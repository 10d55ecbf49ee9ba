/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The node listing, which the filter answers even over the qmpdisk
 * plugin (its own entry wins, see common/qmp/peer.h) because only the
 * filter knows the bitmaps.
 */
#include <config.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "bitmap.h"
#include "core/node.h"
#include "qmp/commands.h"

static const struct qmp_disk_services *disk_services;

/* QEMU 7.2's count: dirty chunks times the granularity, the last,
 * partial chunk counted whole (a checkpoint's size is clipped).
 */
static uint64_t
qemu_count (const struct dirty_bitmap *d)
{
  if (d->inconsistent)
    return 0;
  return bitmap_count_chunks (d->bm) * bitmap_granularity (d->bm);
}

/* QEMU's bitmap-info of each bitmap of N, newest first. */
static json_t *
describe_bitmaps (struct node *n)
{
  json_t *list = json_array ();
  struct dirty_bitmap *d;

  for (d = n->bitmaps; d; d = d->next)
    json_array_append_new (list, json_pack (
      "{s:s,s:I,s:I,s:b,s:b,s:b,s:b}",
      "name", d->name,
      "granularity", (json_int_t) bitmap_granularity (d->bm),
      "count", (json_int_t) qemu_count (d),
      "recording", dirty_bitmap_records (d),
      "persistent", d->persistent,
      "busy", dirty_bitmap_busy (d),
      "inconsistent", d->inconsistent));
  return list;
}

/* Over a plugin other than qmpdisk: our one node, as QEMU would list a
 * node of driver "nbdkit".
 */
static json_t *
describe_own_nodes (void)
{
  json_t *list = json_array ();
  struct node *n;

  for (n = nodes_list (); n; n = n->next)
    json_array_append_new (list, json_pack (
      "{s:s,s:s,s:s,s:b,s:{s:I}}",
      "node-name", n->name, "drv", "nbdkit", "file", "",
      "ro", false, "image", "virtual-size", (json_int_t) n->size));
  return list;
}

static json_t *
query_named_block_nodes (json_t *args, struct qmp_error *err)
{
  json_t *list, *info;
  size_t i;

  list = disk_services ? disk_services->list_nodes () : describe_own_nodes ();
  json_array_foreach (list, i, info) {
    const char *name = json_string_value (json_object_get (info, "node-name"));
    struct node *n = name ? nodes_find (name) : NULL;
    if (n && n->bitmaps)
      json_object_set_new (info, "dirty-bitmaps", describe_bitmaps (n));
  }
  return list;
}

static const struct qmp_arg query_nodes_args[] = {
  { "flat", QMP_BOOL, true, "Accepted, no effect (every node is listed)." },
  { NULL }
};

static const struct qmp_command commands[] = {
  { "query-named-block-nodes", query_nodes_args, query_named_block_nodes,
    "Every node with its dirty bitmaps; over qmpdisk this answers "
    "instead of the plugin's command, over another plugin the one node "
    "is listed with driver \"nbdkit\".",
    "[{\"node-name\", \"drv\", \"file\", \"ro\", \"image\": "
    "{\"virtual-size\"}, \"dirty-bitmaps\"? (absent when there is none): "
    "[{\"name\", \"granularity\", \"count\" (dirty chunks times the "
    "granularity, the last, partial chunk counted whole, as QEMU 7.2; 0 "
    "when inconsistent), \"recording\", \"persistent\", \"busy\" (a "
    "checkpoint's, or read by a backup: the low-level commands refuse "
    "it), \"inconsistent\"}] (newest first)}].",
    NULL },
  { NULL }
};

static const struct qmp_command_set command_set = { "checkpoint", commands };

void
node_commands_register (const struct qmp_disk_services *disks)
{
  disk_services = disks;
  qmp_register_commands (&command_set);
}
