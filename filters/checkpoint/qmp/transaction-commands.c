/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The transaction command, the action registry and the way every change
 * runs (see actions.h).
 */
#include <config.h>

#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "core/node.h"
#include "features/push-backup.h"
#include "qmp/actions.h"
#include "qmp/commands.h"

void
change_begin (struct txn *t)
{
  *t = (struct txn) TXN_INIT;
  nodes_barrier_raise ();
}

/* The commit steps run before the barrier is lowered, so no write sees
 * a removed bitmap go.
 */
int
change_commit (struct txn *t, struct qmp_error *err)
{
  int r = txn_commit (t, err);

  nodes_barrier_lower ();
  return r;
}

void
change_abort (struct txn *t)
{
  txn_abort (t);
  nodes_barrier_lower ();
}

#define MAX_TABLES 8
static const struct txn_action *tables[MAX_TABLES];
static size_t nr_tables;

void
actions_register (const struct txn_action *actions)
{
  if (nr_tables < MAX_TABLES)
    tables[nr_tables++] = actions;
}

static const struct txn_action *
find_action (const char *type)
{
  const struct txn_action *a;
  size_t i;

  for (i = 0; i < nr_tables; i++)
    for (a = tables[i]; a->type; a++)
      if (strcmp (a->type, type) == 0)
        return a;
  return NULL;
}

json_t *
action_run_one (const struct txn_action *a, json_t *args,
                struct qmp_error *err)
{
  struct txn t;
  json_t *ret;

  change_begin (&t);
  ret = a->run (&t, args, err);
  if (ret == NULL)
    change_abort (&t);
  else if (change_commit (&t, err) == -1) {
    json_decref (ret);
    ret = NULL;
  }
  return ret;
}

static const struct qmp_arg action_args[] = {
  { "type", QMP_STR, false,
    "The action: any block-dirty-bitmap-* command (not "
    "x-debug-block-dirty-bitmap-sha256), checkpoint-create, backup-begin, "
    "drive-backup, blockdev-backup or abort." },
  { "data", QMP_OBJECT, true,
    "The action's arguments, as the command of that name takes them "
    "(abort: none)." },
  { NULL }
};

/* Check every action before changing anything, so that a malformed
 * list fails without raising the barrier.
 */
static bool
check_actions (json_t *actions, struct qmp_error *err)
{
  json_t *action;
  size_t i;

  json_array_foreach (actions, i, action) {
    const struct txn_action *a;
    json_t *data;

    if (!json_is_object (action)) {
      qmp_error (err, "Invalid parameter type for 'actions[%zu]', "
                 "expected: object", i);
      return false;
    }
    if (!qmp_check_args (action_args, action, "", err))
      return false;
    a = find_action (json_string_value (json_object_get (action, "type")));
    if (a == NULL) {
      qmp_error (err, "Parameter 'type' does not accept value '%s'",
                 json_string_value (json_object_get (action, "type")));
      return false;
    }
    data = json_object_get (action, "data");
    if (data == NULL && a->args && a->args[0].name) {
      qmp_error (err, "Parameter 'data' is missing");
      return false;
    }
    if (data && !qmp_check_args (a->args, data, "data.", err))
      return false;
  }
  return true;
}

/* completion-mode grouped is for the actions that start jobs; the
 * others refuse it, as QEMU's do.  *GROUPED says which mode it is.
 */
static bool
check_properties (json_t *props, json_t *actions, bool *grouped,
                  struct qmp_error *err)
{
  static const struct qmp_arg prop_args[] = {
    { "completion-mode", QMP_STR, true,
      "\"individual\" (the default); \"grouped\": the jobs the "
      "actions start end together (every action must start one)." },
    { NULL }
  };
  const char *mode;
  json_t *action;
  size_t i;

  *grouped = false;
  if (props == NULL)
    return true;
  if (!qmp_check_args (prop_args, props, "properties.", err))
    return false;
  mode = qmp_arg_str (props, "completion-mode", "individual");
  if (strcmp (mode, "individual") == 0)
    return true;
  if (strcmp (mode, "grouped") != 0) {
    qmp_error (err, "Parameter 'completion-mode' does not accept value "
               "'%s'", mode);
    return false;
  }
  json_array_foreach (actions, i, action) {
    const char *type = json_string_value (json_object_get (action, "type"));
    if (strcmp (type, "drive-backup") != 0 &&
        strcmp (type, "blockdev-backup") != 0) {
      qmp_error (err, "Action '%s' does not support Transaction property "
                 "completion-mode = grouped", type);
      return false;
    }
  }
  *grouped = true;
  return true;
}

static json_t *
transaction (json_t *args, struct qmp_error *err)
{
  json_t *actions = json_object_get (args, "actions"), *action, *ret;
  json_t *empty = json_object ();
  struct txn t;
  bool grouped;
  size_t i;
  int r;

  if (!check_actions (actions, err) ||
      !check_properties (json_object_get (args, "properties"), actions,
                         &grouped, err) ||
      (grouped && push_backups_group_begin (err) == -1)) {
    json_decref (empty);
    return NULL;
  }
  change_begin (&t);
  json_array_foreach (actions, i, action) {
    json_t *data = json_object_get (action, "data");
    const struct txn_action *a =
      find_action (json_string_value (json_object_get (action, "type")));

    ret = a->run (&t, data ? data : empty, err);
    if (ret == NULL) {
      change_abort (&t);
      push_backups_group_end ();
      json_decref (empty);
      return NULL;
    }
    json_decref (ret);
  }
  json_decref (empty);
  r = change_commit (&t, err);
  push_backups_group_end ();
  return r == 0 ? json_object () : NULL;
}

/* The abort action always fails: for testing the rollback. */
static json_t *
abort_action (struct txn *t, json_t *args, struct qmp_error *err)
{
  qmp_error (err, "Transaction aborted using Abort action");
  return NULL;
}

static const struct txn_action abort_actions[] = {
  /* abort: always fails, so that every action before it is undone.
   * Arguments: none.  Errors: "Transaction aborted using Abort action".
   */
  { "abort", NULL, abort_action },
  { NULL }
};

static const struct qmp_arg transaction_args[] = {
  { "actions", QMP_ARRAY, false,
    "The actions, [{\"type\": T, \"data\": {...}}], run in this order "
    "(each sees the ones before it); an empty list succeeds." },
  { "properties", QMP_OBJECT, true,
    "{\"completion-mode\"?}." },
  { NULL }
};

static const struct qmp_command commands[] = {
  { "transaction", transaction_args, transaction,
    "Run every action at one instant (no guest write lands between "
    "them) or none at all.  With completion-mode grouped (drive-backup "
    "and blockdev-backup actions only) the jobs end together: one "
    "failing or cancelled "
    "cancels the others.  The abort action always fails (\"Transaction "
    "aborted using Abort action\"), so that every action before it is "
    "undone.",
    "{}.",
    "The first failing action's error, after undoing the others; "
    "\"Invalid parameter type for 'actions[I]', expected: object\"; "
    "for a bad action, its arguments' errors with the prefix 'data.'; "
    "an unknown type or one that is not an action; completion-mode grouped with an action that "
    "starts no job; \"Cannot save the state directory "
    "...\" when the result cannot be recorded (nothing is changed then)."
  },
  { NULL }
};

static const struct qmp_command_set command_set = { "checkpoint", commands };

void
transaction_commands_register (void)
{
  actions_register (abort_actions);
  qmp_register_commands (&command_set);
}
