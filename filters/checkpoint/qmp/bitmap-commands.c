/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* QEMU's block-dirty-bitmap-* commands, each also a transaction action
 * (QEMU's names, arguments, errors and meaning; docs/qmp-reference.md).
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "bitmap.h"
#include "core/bitmap-ops.h"
#include "qmp/actions.h"
#include "qmp/commands.h"

static json_t *
add_action (struct txn *t, json_t *args, struct qmp_error *err)
{
  struct node *n = nodes_lookup (qmp_arg_str (args, "node", ""), err);

  if (n == NULL ||
      bitmaps_add (t, n, qmp_arg_str (args, "name", ""),
                   qmp_arg_int (args, "granularity", DEFAULT_GRANULARITY),
                   qmp_arg_bool (args, "persistent", false),
                   qmp_arg_bool (args, "disabled", false), err) == -1)
    return NULL;
  return json_object ();
}

/* For the commands that change one existing bitmap. */
static struct dirty_bitmap *
lookup (json_t *args, bool change, struct node **n, struct qmp_error *err)
{
  return bitmaps_lookup (qmp_arg_str (args, "node", ""),
                         qmp_arg_str (args, "name", ""), change, n, err);
}

static json_t *
done (int r)
{
  return r == -1 ? NULL : json_object ();
}

static json_t *
remove_action (struct txn *t, json_t *args, struct qmp_error *err)
{
  struct node *n;
  struct dirty_bitmap *d = lookup (args, false, &n, err);

  /* Inconsistent bitmaps may be removed (that is how they go away),
   * busy ones not.
   */
  if (d && dirty_bitmap_busy (d)) {
    qmp_error (err, "Bitmap '%s' is currently in use by another operation "
               "and cannot be used", d->name);
    return NULL;
  }
  return d ? done (bitmaps_remove (t, n, d, err)) : NULL;
}

static json_t *
clear_action (struct txn *t, json_t *args, struct qmp_error *err)
{
  struct node *n;
  struct dirty_bitmap *d = lookup (args, true, &n, err);

  return d ? done (bitmaps_clear (t, n, d, err)) : NULL;
}

static json_t *
enable_action (struct txn *t, json_t *args, struct qmp_error *err)
{
  struct node *n;
  struct dirty_bitmap *d = lookup (args, true, &n, err);

  return d ? done (bitmaps_set_recording (t, n, d, true, err)) : NULL;
}

static json_t *
disable_action (struct txn *t, json_t *args, struct qmp_error *err)
{
  struct node *n;
  struct dirty_bitmap *d = lookup (args, true, &n, err);

  return d ? done (bitmaps_set_recording (t, n, d, false, err)) : NULL;
}

/* Source I of a merge: a name on the target's node, or {node, name}.
 * Busy and inconsistent sources are refused, as QEMU 7.2 does.
 */
static struct dirty_bitmap *
merge_source (json_t *src, size_t i, const char *node, struct qmp_error *err)
{
  static const struct qmp_arg pair_args[] = {
    { "node", QMP_STR, false, "The source's node." },
    { "name", QMP_STR, false, "The source bitmap." },
    { NULL }
  };
  struct dirty_bitmap *d;
  char what[64];

  snprintf (what, sizeof what, "bitmaps[%zu].", i);
  if (json_is_object (src)) {
    if (!qmp_check_args (pair_args, src, what, err))
      return NULL;
    node = qmp_arg_str (src, "node", "");
    src = json_object_get (src, "name");
  }
  if (!json_is_string (src)) {
    qmp_error (err, "Invalid parameter type for 'bitmaps[%zu]', expected: "
               "string or object", i);
    return NULL;
  }
  d = bitmaps_lookup (node, json_string_value (src), false, NULL, err);
  if (d && dirty_bitmap_busy (d)) {
    qmp_error (err, "Bitmap '%s' is currently in use by another operation "
               "and cannot be used", d->name);
    return NULL;
  }
  if (d && d->inconsistent) {
    qmp_error (err, "Bitmap '%s' is inconsistent and cannot be used",
               d->name);
    return NULL;
  }
  return d;
}

static json_t *
merge_action (struct txn *t, json_t *args, struct qmp_error *err)
{
  const char *node = qmp_arg_str (args, "node", "");
  json_t *sources = json_object_get (args, "bitmaps"), *src;
  struct dirty_bitmap *target, *d;
  struct node *n;
  size_t i;

  target = bitmaps_lookup (node, qmp_arg_str (args, "target", ""), true,
                           &n, err);
  if (target == NULL)
    return NULL;
  /* QEMU 7.2 crashes here; an error is better. */
  if (json_array_size (sources) == 0) {
    qmp_error (err, "Parameter 'bitmaps' must list at least one bitmap");
    return NULL;
  }
  json_array_foreach (sources, i, src) {
    d = merge_source (src, i, node, err);
    if (d == NULL)
      return NULL;
    if (bitmap_size (d->bm) != bitmap_size (target->bm)) {
      qmp_error (err, "Bitmaps are incompatible and can't be merged");
      return NULL;
    }
    if (d != target && bitmaps_merge (t, n, target, d->bm, err) == -1)
      return NULL;
  }
  return json_object ();
}

static json_t *
sha256 (json_t *args, struct qmp_error *err)
{
  struct dirty_bitmap *d = lookup (args, false, NULL, err);
  char hex[65];

  if (d == NULL)
    return NULL;
  if (bitmap_sha256 (d->bm, hex) == -1) {
    qmp_error (err, "sha256: %s", strerror (errno));
    return NULL;
  }
  return json_pack ("{s:s}", "sha256", hex);
}

static const struct qmp_arg add_args[] = {
  { "node", QMP_STR, false, "The node." },
  { "name", QMP_STR, false,
    "The new bitmap's name: 1 to 1023 bytes, not yet on the node." },
  { "granularity", QMP_UINT32, true,
    "Bytes per bit: a power of two from 512 B to 2 GiB (64 KiB)." },
  { "persistent", QMP_BOOL, true,
    "Kept across restarts in the state= directory (false)." },
  { "disabled", QMP_BOOL, true,
    "Created not recording guest writes (false)." },
  { NULL }
};

static const struct qmp_arg node_name_args[] = {
  { "node", QMP_STR, false, "The node." },
  { "name", QMP_STR, false, "The bitmap." },
  { NULL }
};

static const struct qmp_arg merge_args[] = {
  { "node", QMP_STR, false, "The target's node." },
  { "target", QMP_STR, false, "The bitmap that receives the bits." },
  { "bitmaps", QMP_ARRAY, false,
    "The sources, at least one: each a bitmap name on the target's "
    "node, or {\"node\", \"name\"}; every source covers a disk of the "
    "target's size." },
  { NULL }
};

#define LOOKUP_ERRORS                                                   \
  "\"Node 'N' not found\"; \"Dirty bitmap 'NAME' not found\""
#define CHANGE_ERRORS                                                   \
  LOOKUP_ERRORS "; \"Bitmap 'NAME' is currently in use by another "     \
  "operation and cannot be used\" (a checkpoint's bitmap, one a backup "\
  "reads, or one removed earlier in the same transaction); \"Bitmap "   \
  "'NAME' is inconsistent and cannot be used\""

/* QEMU's commands, each also a transaction action; the docs live in
 * the command table below.
 */
static const struct txn_action actions[] = {
  { "block-dirty-bitmap-add", add_args, add_action },
  { "block-dirty-bitmap-remove", node_name_args, remove_action },
  { "block-dirty-bitmap-clear", node_name_args, clear_action },
  { "block-dirty-bitmap-enable", node_name_args, enable_action },
  { "block-dirty-bitmap-disable", node_name_args, disable_action },
  { "block-dirty-bitmap-merge", merge_args, merge_action },
  { NULL }
};

/* Each command runs its action in a txn of its own. */
#define COMMAND(fn, i)                                          \
  static json_t *                                               \
  fn (json_t *args, struct qmp_error *err)                      \
  {                                                             \
    return action_run_one (&actions[i], args, err);             \
  }
COMMAND (add_command, 0)
COMMAND (remove_command, 1)
COMMAND (clear_command, 2)
COMMAND (enable_command, 3)
COMMAND (disable_command, 4)
COMMAND (merge_command, 5)

static const struct qmp_command commands[] = {
  { "block-dirty-bitmap-add", add_args, add_command,
    "A new, clean bitmap on the node that records every guest write "
    "from now on (unless disabled), listed first (newest first, as "
    "QEMU).  Also a transaction action.",
    "{}.",
    "\"Cannot find device='N' nor node-name='N'\"; \"Bitmap name cannot "
    "be empty\"; \"Bitmap name too long: NAME\"; \"Bitmap already exists: "
    "NAME\" (a checkpoint's bitmap holds its checkpoint's name); "
    "\"Granularity must be power of 2 and at least 512\" (also above "
    "2 GiB); \"Parameter 'granularity' expects uint32_t\"; \"Can't store "
    "persistent bitmaps to N: ...\" without state=; \"Cannot allocate "
    "bitmap NAME: REASON\"." },
  { "block-dirty-bitmap-remove", node_name_args, remove_command,
    "Drop a bitmap; inside a transaction at its commit (until then it "
    "is busy, so that remove then add of one name fails as in QEMU).  "
    "Inconsistent bitmaps may be removed (that is how they go away), "
    "busy ones not.  Also a transaction action.",
    "{}.",
    LOOKUP_ERRORS "; \"Bitmap 'NAME' is currently in use by another "
    "operation and cannot be used\"." },
  { "block-dirty-bitmap-clear", node_name_args, clear_command,
    "Every chunk clean again.  Also a transaction action.",
    "{}.",
    CHANGE_ERRORS "." },
  { "block-dirty-bitmap-enable", node_name_args, enable_command,
    "Start recording guest writes.  Also a transaction action.",
    "{}.",
    CHANGE_ERRORS "." },
  { "block-dirty-bitmap-disable", node_name_args, disable_command,
    "Stop recording guest writes.  Also a transaction action.",
    "{}.",
    CHANGE_ERRORS "." },
  { "block-dirty-bitmap-merge", merge_args, merge_command,
    "TARGET |= each source, all or nothing; sources of another "
    "granularity mark every target chunk they overlap.  Also a "
    "transaction action.",
    "{}.",
    CHANGE_ERRORS " for the target; for a source, \"Node 'N' not "
    "found\", \"Dirty bitmap 'NAME' not found\", busy (as for the "
    "target, QEMU 7.2's refusal) or inconsistent; \"Parameter "
    "'bitmaps[I].name' is missing\" and the other argument errors of a "
    "{node, name} source; \"Invalid parameter type for 'bitmaps[I]', "
    "expected: string or object\"; \"Parameter 'bitmaps' must list at "
    "least one bitmap\" (QEMU 7.2 crashes instead); \"Bitmaps are "
    "incompatible and can't be merged\" for bitmaps of disks of "
    "different sizes." },
  { "x-debug-block-dirty-bitmap-sha256", node_name_args, sha256,
    "The SHA-256 of the bitmap's bits in QEMU 7.2's layout: bit i of "
    "byte i/8 (at position i%8) is chunk i, padded with zero bytes to a "
    "multiple of 8 bytes; the same operations on the same disk give the "
    "same hash as in qemu-storage-daemon 7.2.",
    "{\"sha256\": 64 hex digits}.",
    LOOKUP_ERRORS "." },
  { NULL }
};

static const struct qmp_command_set command_set = { "checkpoint", commands };

void
bitmap_commands_register (void)
{
  actions_register (actions);
  qmp_register_commands (&command_set);
}
