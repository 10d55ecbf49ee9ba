/* The filter's QMP commands that are not about bitmaps, checkpoints or
 * backups: the node listing, which the filter answers even over the
 * qmpdisk plugin because only the filter knows the bitmaps.
 */
#include <config.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "qmp.h"
#include "nodes.h"
#include "bitmaps.h"
#include "monitor.h"

/* The plugin's (or our single) node list, with the bitmaps added. */
static json_t *
query_named_block_nodes (json_t *args, struct qmp_error *err)
{
  json_t *list, *info;
  size_t i;

  list = disk_services ? disk_services->list_nodes ()
                       : nodes_describe_single ();
  json_array_foreach (list, i, info) {
    const char *name = json_string_value (json_object_get (info, "node-name"));
    struct node *n = name ? nodes_find (name) : NULL;
    if (n && n->bitmaps)
      json_object_set_new (info, "dirty-bitmaps", bitmaps_describe (n));
  }
  return list;
}

static const struct qmp_arg query_nodes_args[] = {
  { "flat", QMP_BOOL, true },
  { NULL }
};

static const struct qmp_command commands[] = {
  { "query-named-block-nodes", query_nodes_args, query_named_block_nodes },
  { NULL }
};

static const struct qmp_command_set command_set = { "checkpoint", commands };

void
monitor_register_commands (void)
{
  qmp_register_commands (&command_set);
}
