/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* backup-begin (also a transaction action), backup-end, query-backups:
 * the QMP side of pull backups (features/pull-backup.h).
 */
#include <config.h>

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "cleanup.h"
#include "vector.h"
#include "core/checkpoint-chain.h"
#include "features/pull-backup.h"
#include "qmp/actions.h"
#include "qmp/commands.h"

DEFINE_VECTOR_TYPE (disk_specs, struct backup_disk_spec);

/* The disks argument, checked: known nodes, none twice.  The strings
 * are borrowed from ARGS.
 */
static int
parse_disks (json_t *disks, disk_specs *out, struct qmp_error *err)
{
  static const struct qmp_arg disk_args[] = {
    { "node", QMP_STR, false, "The node to back up." },
    { "export", QMP_STR, true,
      "The export's name (NODE@ID); unique among every export." },
    { NULL }
  };
  json_t *d;
  size_t i, j;

  json_array_foreach (disks, i, d) {
    struct backup_disk_spec spec;
    char what[64];

    if (!json_is_object (d)) {
      qmp_error (err, "Invalid parameter type for 'disks[%zu]', expected: "
                 "object", i);
      return -1;
    }
    snprintf (what, sizeof what, "disks[%zu].", i);
    if (!qmp_check_args (disk_args, d, what, err))
      return -1;
    spec.node = qmp_arg_str (d, "node", "");
    spec.export = qmp_arg_str (d, "export", NULL);
    if (nodes_lookup (spec.node, err) == NULL)
      return -1;
    for (j = 0; j < out->len; j++)
      if (strcmp (out->ptr[j].node, spec.node) == 0) {
        qmp_error (err, "Disk '%s' is named twice", spec.node);
        return -1;
      }
    if (disk_specs_append (out, spec) == -1) {
      qmp_error (err, "out of memory");
      return -1;
    }
  }
  if (disks && out->len == 0) {
    qmp_error (err, "Parameter 'disks' must list at least one disk");
    return -1;
  }
  return 0;
}

static bool
parse_mode (json_t *args, enum cbw_on_error *mode, struct qmp_error *err)
{
  const char *s = qmp_arg_str (args, "on-cbw-error", "break-snapshot");

  if (strcmp (s, "break-snapshot") == 0)
    *mode = CBW_BREAK_SNAPSHOT;
  else if (strcmp (s, "break-guest-write") == 0)
    *mode = CBW_BREAK_GUEST_WRITE;
  else {
    qmp_error (err, "Parameter 'on-cbw-error' does not accept value '%s'", s);
    return false;
  }
  return true;
}

/* "checkpoint": {name, description?}. */
static bool
parse_checkpoint (json_t *args, struct backup_spec *spec,
                  struct qmp_error *err)
{
  static const struct qmp_arg spec_args[] = {
    { "name", QMP_STR, false, "The new checkpoint's name." },
    { "description", QMP_STR, true, "Its description (none)." },
    { NULL }
  };
  json_t *c = json_object_get (args, "checkpoint");

  if (c == NULL)
    return true;
  if (!qmp_check_args (spec_args, c, "checkpoint.", err))
    return false;
  spec->checkpoint = qmp_arg_str (c, "name", "");
  spec->checkpoint_description = qmp_arg_str (c, "description", NULL);
  return true;
}

static json_t *
begin_action (struct txn *t, json_t *args, struct qmp_error *err)
{
  json_t *disks = json_object_get (args, "disks");
  disk_specs specs = empty_vector;
  struct backup_spec spec = {
    .id = qmp_arg_str (args, "id", NULL),
    .incremental = qmp_arg_str (args, "incremental", NULL),
  };
  struct backup *b = NULL;

  if (parse_mode (args, &spec.on_cbw_error, err) &&
      parse_disks (disks, &specs, err) == 0 &&
      parse_checkpoint (args, &spec, err)) {
    spec.disks = disks ? specs.ptr : NULL;
    spec.nr_disks = specs.len;
    b = backup_begin (t, &spec, err);
  }
  disk_specs_reset (&specs);
  if (b == NULL)
    return NULL;
  return json_pack ("{s:s,s:o}", "id", backup_id (b),
                    "exports", backup_describe_exports (b));
}

/* A backup's pending checkpoint C: kept (no longer pending) when its
 * backup succeeded, else deleted (its bits merged into its parent).
 */
static int
settle_checkpoint (struct checkpoint *c, bool keep, struct qmp_error *err)
{
  struct txn t;

  change_begin (&t);
  if ((keep ? checkpoints_set_pending (&t, c, false, err)
            : checkpoints_delete (&t, c, false, err)) == -1) {
    change_abort (&t);
    return -1;
  }
  return change_commit (&t, err);
}

/* Ending a backup always works, and frees its scratch at once (a full
 * scratch store must never make a backup unendable).  Then, in a
 * change of its own, its checkpoint is settled: if that cannot be
 * saved, the error says so and the checkpoint stays pending, to be
 * removed at the next start.
 */
static json_t *
end_command (json_t *args, struct qmp_error *err)
{
  const char *id = qmp_arg_str (args, "id", "");
  struct backup *b = backups_find (id);
  bool success = qmp_arg_bool (args, "success", true);
  struct qmp_error why = { 0 };
  struct checkpoint *c;
  struct txn t;

  if (b == NULL) {
    qmp_error (err, "Backup '%s' not found", id);
    return NULL;
  }
  c = backup_own_checkpoint (b);
  change_begin (&t);
  backup_end (b);
  change_commit (&t, err);      /* nothing to save: cannot fail */
  if (c == NULL || settle_checkpoint (c, success, &why) == 0)
    return json_object ();
  if (success)
    qmp_error (err, "Backup '%s' ended, but its checkpoint '%s' could not "
               "be kept: %s; it stays pending (no incremental backup can "
               "be taken from it) and is deleted at the next start", id,
               c->name, why.desc ? why.desc : "out of memory");
  else
    qmp_error (err, "Backup '%s' ended, but its checkpoint '%s' could not "
               "be deleted: %s; delete it (checkpoint-delete) before "
               "taking an incremental backup from it", id, c->name,
               why.desc ? why.desc : "out of memory");
  qmp_error_clear (&why);
  return NULL;
}

void
backup_commands_drop_pending (void)
{
  struct qmp_error err = { 0 };
  struct checkpoint *c, *next;

  for (c = checkpoints_list (); c; c = next) {
    CLEANUP_FREE char *name = NULL;
    next = c->next;
    if (!c->pending || backup_of_checkpoint (c))
      continue;
    name = strdup (c->name);
    if (settle_checkpoint (c, false, &err) == 0)
      nbdkit_error ("checkpoint: checkpoint '%s' was created by a backup "
                    "that never ended (nbdkit stopped first): it is "
                    "deleted, its changes merged into its parent, so that "
                    "no incremental backup is taken from it",
                    name ? name : "?");
    else {
      nbdkit_error ("checkpoint: checkpoint '%s' was created by a backup "
                    "that never ended (nbdkit stopped first), and cannot "
                    "be deleted: %s: it stays pending, and no incremental "
                    "backup can be taken from it", name ? name : "?",
                    err.desc ? err.desc : "out of memory");
      qmp_error_clear (&err);
    }
  }
}

static json_t *
query_command (json_t *args, struct qmp_error *err)
{
  json_t *list = json_array ();
  struct backup *b;

  for (b = backups_first (); b; b = backup_next (b))
    json_array_insert_new (list, 0, backup_describe (b));
  return list;
}

static const struct qmp_arg begin_args[] = {
  { "id", QMP_STR, true, "The backup's name (backup-N, N counting up)." },
  { "incremental", QMP_STR, true,
    "A checkpoint: the exports' block status then reports the chunks "
    "unchanged since it as hole without zero (a full backup when "
    "absent)." },
  { "checkpoint", QMP_OBJECT, true,
    "{\"name\", \"description\"?}: a checkpoint created at the same "
    "instant on the same disks, pending until backup-end with success "
    "(none)." },
  { "disks", QMP_ARRAY, true,
    "[{\"node\", \"export\"?}], at least one (every node)." },
  { "on-cbw-error", QMP_STR, true,
    "When saving a chunk before a guest write fails: "
    "\"break-snapshot\" (the default: the guest write succeeds and "
    "the backup fails) or \"break-guest-write\" (the guest write "
    "fails, the backup goes on)." },
  { NULL }
};

static const struct qmp_arg end_args[] = {
  { "id", QMP_STR, false, "The backup." },
  { "success", QMP_BOOL, true,
    "Whether the backup was kept (true).  false deletes the checkpoint "
    "this backup created (by its serial, never a later one of the same "
    "name), so that the next incremental still covers every change." },
  { NULL }
};

#define BEGIN_DOC                                                       \
  "Freeze the disks as they are now and export each one read-only as "  \
  "it was at this instant (pull mode), whatever is written afterwards " \
  "(copy-before-write into scratch).  Also a transaction action."
#define BEGIN_RETURNS                                                   \
  "{\"id\", \"exports\": [{\"node\", \"export\", \"size\"}]}."
#define BEGIN_ERRORS                                                    \
  "\"Backup 'ID' already exists\"; \"Cannot find device='N' nor "       \
  "node-name='N'\"; \"Disk 'N' is named twice\"; \"Parameter 'disks' "   \
  "must list at least one disk\"; \"Invalid parameter type for "         \
  "'disks[I]', expected: object\" and the disks' argument errors "       \
  "(prefix 'disks[I].'); \"Export 'E' already exists\"; \"Checkpoint "   \
  "'C' not found\"; \"Checkpoint 'C' does not cover disk 'N'\"; an "     \
  "inconsistent or missing base bitmap; \"Parameter 'on-cbw-error' "     \
  "does not accept value 'V'\"; the checkpoint argument's errors "       \
  "(prefix 'checkpoint.') and checkpoint-create's; \"Cannot create a "   \
  "scratch file in DIR: REASON\"; a descriptor budget exceeded."

static const struct txn_action actions[] = {
  { "backup-begin", begin_args, begin_action },
  { NULL }
};

static json_t *
begin_command (json_t *args, struct qmp_error *err)
{
  return action_run_one (&actions[0], args, err);
}

static const struct qmp_command commands[] = {
  { "backup-begin", begin_args, begin_command,
    BEGIN_DOC, BEGIN_RETURNS, BEGIN_ERRORS },
  { "backup-end", end_args, end_command,
    "End a backup: its exports refuse new connections and fail I/O on "
    "open ones; its scratch space is given back at once.  Ending always "
    "succeeds for a known backup, also a failed one.",
    "{}.",
    "\"Backup 'ID' not found\"." },
  { "query-backups", NULL, query_command,
    "The backups, oldest first.",
    "[{\"id\", \"incremental\"? (its base checkpoint), \"checkpoint\"? "
    "(the one it created), \"exports\": [{\"node\", \"export\", "
    "\"size\"}], \"status\" (\"active\" or \"failed\"), \"error\"? (why "
    "it failed), \"copied-bytes\" (saved to scratch so far)}].",
    NULL },
  { NULL }
};

static const struct qmp_command_set command_set = { "checkpoint", commands };

void
backup_commands_register (void)
{
  actions_register (actions);
  qmp_register_commands (&command_set);
}
