/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* QEMU's block-dirty-bitmap-* commands, each also a transaction action
 * (QEMU's names, arguments, errors and meaning; spec/qmp.md).
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
    { "node", QMP_STR, false },
    { "name", QMP_STR, false },
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
  { "node", QMP_STR, false },
  { "name", QMP_STR, false },
  { "granularity", QMP_UINT32, true },
  { "persistent", QMP_BOOL, true },
  { "disabled", QMP_BOOL, true },
  { NULL }
};

static const struct qmp_arg node_name_args[] = {
  { "node", QMP_STR, false },
  { "name", QMP_STR, false },
  { NULL }
};

static const struct qmp_arg merge_args[] = {
  { "node", QMP_STR, false },
  { "target", QMP_STR, false },
  { "bitmaps", QMP_ARRAY, false },
  { NULL }
};

static const struct txn_action actions[] = {
  /* block-dirty-bitmap-add: a new, clean bitmap on NODE that records
   * every guest write from now on (unless disabled).
   * Arguments: node, name (1 to 1023 bytes, not yet on the node),
   * granularity? (a power of two, 512 B to 2 GiB; 64 KiB),
   * persistent? (kept in state=; false), disabled? (false).
   * Returns: {}.
   * Errors: "Cannot find device='N' nor node-name='N'"; "Bitmap already
   * exists: NAME"; "Granularity must be power of 2 and at least 512";
   * "Can't store persistent bitmaps to N: ..." without state=.
   */
  { "block-dirty-bitmap-add", add_args, add_action },
  /* block-dirty-bitmap-remove: drop a bitmap (at commit, inside a
   * transaction); inconsistent ones may be removed, busy ones not.
   * Arguments: node, name.  Returns: {}.
   * Errors: unknown node; "Dirty bitmap 'NAME' not found"; "Bitmap
   * 'NAME' is currently in use by another operation and cannot be used".
   */
  { "block-dirty-bitmap-remove", node_name_args, remove_action },
  /* block-dirty-bitmap-clear: every chunk clean again.
   * Arguments: node, name.  Returns: {}.
   * Errors: as remove, and "Bitmap 'NAME' is inconsistent and cannot be
   * used".
   */
  { "block-dirty-bitmap-clear", node_name_args, clear_action },
  /* block-dirty-bitmap-enable / -disable: start or stop recording
   * guest writes.  Arguments: node, name.  Returns: {}.
   * Errors: as clear.
   */
  { "block-dirty-bitmap-enable", node_name_args, enable_action },
  { "block-dirty-bitmap-disable", node_name_args, disable_action },
  /* block-dirty-bitmap-merge: TARGET |= each of BITMAPS.
   * Arguments: node, target, bitmaps ([name on NODE, or {"node",
   * "name"}], at least one).  Returns: {}.
   * Errors: as clear for the target; unknown or inconsistent sources;
   * "Parameter 'bitmaps' must list at least one bitmap" (QEMU 7.2
   * crashes instead); "Bitmaps are incompatible and can't be merged"
   * for bitmaps of disks of different sizes.
   */
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
  { "block-dirty-bitmap-add", add_args, add_command },
  { "block-dirty-bitmap-remove", node_name_args, remove_command },
  { "block-dirty-bitmap-clear", node_name_args, clear_command },
  { "block-dirty-bitmap-enable", node_name_args, enable_command },
  { "block-dirty-bitmap-disable", node_name_args, disable_command },
  { "block-dirty-bitmap-merge", merge_args, merge_command },
  /* x-debug-block-dirty-bitmap-sha256: the SHA-256 of the bitmap's bits
   * in QEMU 7.2's layout (bit i of byte i/8 is chunk i, padded with
   * zero bytes to a multiple of 8), as 64 hex digits.
   * Arguments: node, name.  Returns: {"sha256": HEX}.
   * Errors: unknown node or bitmap.
   */
  { "x-debug-block-dirty-bitmap-sha256", node_name_args, sha256 },
  { NULL }
};

static const struct qmp_command_set command_set = { "checkpoint", commands };

void
bitmap_commands_register (void)
{
  actions_register (actions);
  qmp_register_commands (&command_set);
}
