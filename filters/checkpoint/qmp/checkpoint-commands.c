/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* checkpoint-create (also a transaction action), checkpoint-delete and
 * query-checkpoints.
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "bitmap.h"
#include "core/bitmap-ops.h"
#include "core/checkpoint-chain.h"
#include "qmp/actions.h"
#include "qmp/commands.h"

/* The disks argument as node names (borrowed from ARGS). */
static int
disk_names (json_t *disks, string_vector *names, struct qmp_error *err)
{
  json_t *v;
  size_t i;

  json_array_foreach (disks, i, v) {
    if (!json_is_string (v)) {
      qmp_error (err, "Invalid parameter type for 'disks[%zu]', expected: "
                 "string", i);
      return -1;
    }
    if (string_vector_append (names, (char *) json_string_value (v)) == -1) {
      qmp_error (err, "out of memory");
      return -1;
    }
  }
  return 0;
}

static json_t *
create_action (struct txn *t, json_t *args, struct qmp_error *err)
{
  json_t *disks = json_object_get (args, "disks"), *ret;
  string_vector names = empty_vector;
  struct checkpoint *c = NULL;
  bool redefine = qmp_arg_bool (args, "redefine", false);

  if (!redefine && json_object_get (args, "parent")) {
    qmp_error (err, "Parameter 'parent' needs 'redefine'");
    return NULL;
  }
  if (!redefine && json_object_get (args, "creation-time")) {
    qmp_error (err, "Parameter 'creation-time' needs 'redefine'");
    return NULL;
  }
  if (redefine && qmp_arg_int (args, "creation-time", 0) < 0) {
    qmp_error (err, "Parameter 'creation-time' expects a non-negative value");
    return NULL;
  }
  if (disk_names (disks, &names, err) == 0)
    c = redefine
      ? checkpoints_redefine (t, qmp_arg_str (args, "name", ""),
                              qmp_arg_str (args, "description", NULL),
                              disks ? &names : NULL,
                              qmp_arg_str (args, "parent", NULL),
                              qmp_arg_int (args, "creation-time", -1), err)
      : checkpoints_create (t, qmp_arg_str (args, "name", ""),
                            qmp_arg_str (args, "description", NULL),
                            disks ? &names : NULL, err);
  string_vector_reset (&names);
  if (c == NULL)
    return NULL;
  ret = json_pack ("{s:s,s:I}", "name", c->name,
                   "creation-time", (json_int_t) c->creation_time);
  if (c->parent)
    json_object_set_new (ret, "parent", json_string (c->parent->name));
  return ret;
}

static const struct qmp_arg create_args[] = {
  { "name", QMP_STR, false,
    "The new checkpoint's name (1 to 1023 bytes), also its bitmaps' "
    "name." },
  { "description", QMP_STR, true, "Free text kept with it (none)." },
  { "disks", QMP_ARRAY, true,
    "[node], at least one, none twice (every node; with redefine, every "
    "node that has a bitmap of that name)." },
  { "redefine", QMP_BOOL, true,
    "libvirt's REDEFINE (false): re-attach the checkpoint to the plain "
    "persistent bitmaps that kept its name on each of its disks (after "
    "a metadata-only delete, or when a management layer rebuilds its "
    "records), creating and clearing nothing." },
  { "parent", QMP_STR, true,
    "Only with redefine: the checkpoint it follows; it takes over the "
    "parent's children (none: it goes first, a root, before every "
    "other checkpoint)." },
  { "creation-time", QMP_INT, true,
    "Only with redefine: its creation time in seconds, not before its "
    "parent's and not after the checkpoint that will follow it (now)." },
  { NULL }
};

#define CREATE_DOC                                                      \
  "A new checkpoint, child of the current one, that becomes current; "  \
  "on each of its disks its bitmap (named after it) records from now "  \
  "on and the previous checkpoint's stops.  With redefine, an old "     \
  "checkpoint comes back over the bitmaps it left (see redefine); it "  \
  "becomes current when it is the newest, and on each disk where it "   \
  "is the newest its predecessor's bitmap stops recording.  Also a "    \
  "transaction action."
#define CREATE_RETURNS                                                  \
  "{\"name\", \"parent\"? (absent for a root), \"creation-time\" "       \
  "(seconds)}."
#define CREATE_ERRORS                                                   \
  "\"Checkpoint name must be 1 to 1023 bytes\"; \"Checkpoint 'NAME' "   \
  "already exists\"; \"Cannot find device='N' nor node-name='N'\"; "    \
  "\"Invalid parameter type for 'disks[I]', expected: string\"; \"Disk " \
  "'N' is named twice\"; \"A checkpoint needs at least one disk\"; "    \
  "\"Bitmap already exists: NAME\" on a disk.  \"Parameter 'parent' "    \
  "needs 'redefine'\", \"Parameter 'creation-time' needs 'redefine'\", "  \
  "\"Parameter 'creation-time' expects a non-negative value\".  "        \
  "Refused redefines (nothing changes): \"Checkpoint 'P' not found\" "  \
  "(the parent); \"Cannot redefine checkpoint 'NAME': no disk has a "    \
  "bitmap of that name\"; \"...: disk 'N' has no bitmap 'NAME'\"; "      \
  "\"...: bitmap 'NAME' on 'N' already belongs to a checkpoint\"; "      \
  "\"Bitmap 'NAME' is currently in use by another operation and cannot " \
  "be used\" (busy: a backup reads it, or it is removed earlier in the " \
  "same transaction); \"Bitmap 'NAME' on 'N' is inconsistent and "       \
  "cannot be used\"; \"...: bitmap 'NAME' on 'N' is not persistent\" "   \
  "(with state=); and where the result would not be a valid chain: "    \
  "\"...: its creation-time is before its parent's ('P')\", \"...: its "  \
  "creation-time is after that of 'C', which would follow it\", \"...: " \
  "it would be the newest on 'N', but bitmap 'NAME' there is "          \
  "disabled\" (the changes since it would be lost), \"...: bitmap "      \
  "'NAME' on 'N' records, but a newer checkpoint covers that disk\" "    \
  "(only the newest checkpoint's bitmap on a disk records)."

static const struct txn_action actions[] = {
  { "checkpoint-create", create_args, create_action },
  { NULL }
};

static json_t *
create_command (json_t *args, struct qmp_error *err)
{
  return action_run_one (&actions[0], args, err);
}

static bool
is_descendant (const struct checkpoint *c, const struct checkpoint *of)
{
  for (c = c->parent; c; c = c->parent)
    if (c == of)
      return true;
  return false;
}

static json_t *
delete_command (json_t *args, struct qmp_error *err)
{
  const char *name = qmp_arg_str (args, "name", "");
  bool children = qmp_arg_bool (args, "children", false);
  bool children_only = qmp_arg_bool (args, "children-only", false);
  bool metadata_only = qmp_arg_bool (args, "metadata-only", false);
  struct checkpoint *c = checkpoints_find (name), *p, *newest;
  struct txn t;
  bool more;

  if (c == NULL) {
    qmp_error (err, "Checkpoint '%s' not found", name);
    return NULL;
  }
  if (children && children_only) {
    qmp_error (err, "'children' and 'children-only' are mutually exclusive");
    return NULL;
  }
  change_begin (&t);
  /* Descendants first, newest first, so each merges into a checkpoint
   * that is still there.
   */
  do {
    more = false;
    newest = NULL;
    for (p = checkpoints_list (); p; p = p->next)
      if ((children || children_only) && is_descendant (p, c))
        newest = p;
    if (newest) {
      if (checkpoints_delete (&t, newest, metadata_only, err) == -1)
        goto fail;
      more = true;
    }
  } while (more);
  if (!children_only && checkpoints_delete (&t, c, metadata_only, err) == -1)
    goto fail;
  return change_commit (&t, err) == 0 ? json_object () : NULL;
 fail:
  change_abort (&t);
  return NULL;
}

/* Bytes changed since each checkpoint on node N, into SIZES
 * {checkpoint: {node: bytes}}: one pass from the newest checkpoint
 * back, OR-ing each bitmap into a running union, so that listing a
 * thousand checkpoints costs a thousand merges, not half a million.
 */
static void
add_sizes (struct node *n, json_t *sizes)
{
  struct checkpoint *c, **order;
  struct bitmap *acc = NULL;
  size_t nr = 0, i;

  for (c = checkpoints_list (); c; c = c->next)
    nr++;
  order = malloc ((nr ? nr : 1) * sizeof *order);
  if (order == NULL)
    return;
  nr = 0;
  for (c = checkpoints_list (); c; c = c->next)
    if (checkpoint_covers (c, n->name))
      order[nr++] = c;
  for (i = nr; i-- > 0; ) {
    struct dirty_bitmap *d = bitmaps_find (n, order[i]->name);
    json_t *per_node;
    if (d == NULL || d->inconsistent)
      break;                    /* unknown from here back */
    if (acc == NULL)
      acc = bitmap_new (n->size, bitmap_granularity (d->bm));
    if (acc == NULL || bitmap_merge (acc, d->bm) == -1)
      break;
    per_node = json_object_get (sizes, order[i]->name);
    if (per_node == NULL) {
      per_node = json_object ();
      json_object_set_new (sizes, order[i]->name, per_node);
    }
    json_object_set_new (per_node, n->name,
                         json_integer (bitmap_count_bytes (acc)));
  }
  bitmap_free (acc);
  free (order);
}

/* The disks of C, with their sizes from SIZES (NULL: no sizes). */
static json_t *
describe_disks (const struct checkpoint *c, json_t *sizes)
{
  json_t *disks = json_array ();
  size_t i;

  for (i = 0; i < c->disks.len; i++) {
    json_t *disk = json_pack ("{s:s,s:s}", "node", c->disks.ptr[i],
                              "bitmap", c->name);
    json_t *size = json_object_get (json_object_get (sizes, c->name),
                                    c->disks.ptr[i]);
    if (size)
      json_object_set (disk, "size", size);
    json_array_append_new (disks, disk);
  }
  return disks;
}

static json_t *
describe (const struct checkpoint *c, json_t *sizes)
{
  json_t *info, *children = json_array ();
  struct checkpoint *p;

  for (p = checkpoints_list (); p; p = p->next)
    if (p->parent == c)
      json_array_append_new (children, json_string (p->name));
  info = json_pack ("{s:s,s:o,s:I,s:b,s:b,s:o}",
                    "name", c->name,
                    "children", children,
                    "creation-time", (json_int_t) c->creation_time,
                    "current", c == checkpoints_current (),
                    "pending", c->pending,
                    "disks", describe_disks (c, sizes));
  if (c->parent)
    json_object_set_new (info, "parent", json_string (c->parent->name));
  if (c->description)
    json_object_set_new (info, "description", json_string (c->description));
  return info;
}

static bool
has_children (const struct checkpoint *c)
{
  struct checkpoint *p;

  for (p = checkpoints_list (); p; p = p->next)
    if (p->parent == c)
      return true;
  return false;
}

static json_t *
query_command (json_t *args, struct qmp_error *err)
{
  bool roots = qmp_arg_bool (args, "roots", false);
  bool leaves = qmp_arg_bool (args, "leaves", false);
  bool no_leaves = qmp_arg_bool (args, "no-leaves", false);
  bool descendants = qmp_arg_bool (args, "descendants", false);
  bool size = qmp_arg_bool (args, "size", false);
  const char *parent_name = qmp_arg_str (args, "parent", NULL);
  struct checkpoint *parent = NULL, *c;
  json_t *list, *sizes = NULL;

  if (parent_name && (parent = checkpoints_find (parent_name)) == NULL) {
    qmp_error (err, "Checkpoint '%s' not found", parent_name);
    return NULL;
  }
  if (roots && parent) {
    qmp_error (err, "'roots' and 'parent' are mutually exclusive");
    return NULL;
  }
  if (descendants && !parent) {
    qmp_error (err, "'descendants' needs 'parent'");
    return NULL;
  }
  if (leaves && no_leaves)      /* both: no filter, as libvirt does */
    leaves = no_leaves = false;
  if (size) {
    struct node *n;
    sizes = json_object ();
    for (n = nodes_list (); n; n = n->next)
      add_sizes (n, sizes);
  }
  list = json_array ();
  for (c = checkpoints_list (); c; c = c->next) {
    if (roots && c->parent)
      continue;
    if (parent && !(descendants ? is_descendant (c, parent)
                                : c->parent == parent))
      continue;
    if ((leaves && has_children (c)) || (no_leaves && !has_children (c)))
      continue;
    json_array_append_new (list, describe (c, sizes));
  }
  json_decref (sizes);
  return list;
}

static const struct qmp_arg delete_args[] = {
  { "name", QMP_STR, false, "The checkpoint." },
  { "children", QMP_BOOL, true, "Its descendants too (false)." },
  { "children-only", QMP_BOOL, true,
    "Only its descendants, not itself (false)." },
  { "metadata-only", QMP_BOOL, true,
    "Forget the checkpoint but leave its bitmaps in place as plain "
    "persistent bitmaps, for a later redefine (false)." },
  { NULL }
};

static const struct qmp_arg query_args[] = {
  { "roots", QMP_BOOL, true, "Only the checkpoints without a parent." },
  { "leaves", QMP_BOOL, true,
    "Only those without children (with no-leaves too: no filter, as "
    "libvirt)." },
  { "no-leaves", QMP_BOOL, true, "Only those with children." },
  { "parent", QMP_STR, true, "Only the children of this checkpoint." },
  { "descendants", QMP_BOOL, true,
    "With parent: all of its descendants, not only its children." },
  { "size", QMP_BOOL, true,
    "Add each disk's size: the bytes changed on that disk since the "
    "checkpoint, clipped to the disk size (false)." },
  { NULL }
};

static const struct qmp_command commands[] = {
  { "checkpoint-create", create_args, create_command,
    CREATE_DOC, CREATE_RETURNS, CREATE_ERRORS },
  { "checkpoint-delete", delete_args, delete_command,
    "Forget a checkpoint and keep every other one's \"changed since\" "
    "exact: its bitmap merges into its parent's on each disk (which "
    "records again if it was the newest); descendants go first, newest "
    "first.",
    "{}.",
    "\"Checkpoint 'NAME' not found\"; \"'children' and 'children-only' "
    "are mutually exclusive\"; \"Checkpoint 'NAME' is in use by a "
    "backup\"; \"Cannot delete checkpoint 'NAME': disk 'N' is not "
    "present\"." },
  { "query-checkpoints", query_args, query_command,
    "The checkpoints, oldest first, filtered as the arguments say.",
    "[{\"name\", \"parent\"? (absent for a root), \"children\": "
    "[names], \"creation-time\" (seconds), \"description\"?, "
    "\"current\" (the parent of the next checkpoint-create), "
    "\"pending\" (created by a backup that has not ended with success "
    "yet; one whose backup died with nbdkit is deleted at the next "
    "start), \"disks\": "
    "[{\"node\", \"bitmap\" (its name), \"size\"? (with size=true, "
    "absent when unknown: an inconsistent bitmap)}]}].",
    "\"Checkpoint 'P' not found\" (parent); \"'roots' and 'parent' are "
    "mutually exclusive\"; \"'descendants' needs 'parent'\"." },
  { NULL }
};

static const struct qmp_command_set command_set = { "checkpoint", commands };

void
checkpoint_commands_register (void)
{
  actions_register (actions);
  qmp_register_commands (&command_set);
}
