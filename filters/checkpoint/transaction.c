/* The transaction command: every action at one instant, or none. */
#include <config.h>

#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "transaction.h"

#define MAX_TABLES 8
static const struct txn_action *tables[MAX_TABLES];
static size_t nr_tables;

void
transaction_register_actions (const struct txn_action *actions)
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
transaction_run_one (const struct txn_action *a, json_t *args,
                     struct qmp_error *err)
{
  struct txn t;
  json_t *ret;

  txn_begin (&t);
  ret = a->run (&t, args, err);
  if (ret == NULL)
    txn_abort (&t);
  else if (txn_commit (&t, err) == -1) {
    json_decref (ret);
    ret = NULL;
  }
  return ret;
}

static const struct qmp_arg action_args[] = {
  { "type", QMP_STR, false },
  { "data", QMP_OBJECT, true },
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

  if (json_array_size (actions) == 0)
    return true;
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

/* completion-mode grouped is for push backup jobs, which this
 * project does not have yet: every action refuses it, as QEMU's
 * non-job actions do.
 */
static bool
check_properties (json_t *props, json_t *actions, struct qmp_error *err)
{
  static const struct qmp_arg prop_args[] = {
    { "completion-mode", QMP_STR, true },
    { NULL }
  };
  const char *mode;

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
  if (json_array_size (actions) > 0) {
    qmp_error (err, "Action '%s' does not support Transaction property "
               "completion-mode = grouped",
               json_string_value (json_object_get (json_array_get (actions, 0),
                                                   "type")));
    return false;
  }
  return true;
}

static json_t *
transaction (json_t *args, struct qmp_error *err)
{
  json_t *actions = json_object_get (args, "actions"), *action, *ret;
  json_t *empty = json_object ();
  struct txn t;
  size_t i;

  if (!check_actions (actions, err) ||
      !check_properties (json_object_get (args, "properties"), actions,
                         err)) {
    json_decref (empty);
    return NULL;
  }
  txn_begin (&t);
  json_array_foreach (actions, i, action) {
    json_t *data = json_object_get (action, "data");
    const struct txn_action *a =
      find_action (json_string_value (json_object_get (action, "type")));

    ret = a->run (&t, data ? data : empty, err);
    if (ret == NULL) {
      txn_abort (&t);
      json_decref (empty);
      return NULL;
    }
    json_decref (ret);
  }
  json_decref (empty);
  return txn_commit (&t, err) == 0 ? json_object () : NULL;
}

/* The abort action always fails: for testing the rollback. */
static json_t *
abort_action (struct txn *t, json_t *args, struct qmp_error *err)
{
  qmp_error (err, "Transaction aborted using Abort action");
  return NULL;
}

static const struct txn_action abort_actions[] = {
  { "abort", NULL, abort_action },
  { NULL }
};

static const struct qmp_arg transaction_args[] = {
  { "actions", QMP_ARRAY, false },
  { "properties", QMP_OBJECT, true },
  { NULL }
};

static const struct qmp_command commands[] = {
  { "transaction", transaction_args, transaction },
  { NULL }
};

static const struct qmp_command_set command_set = { "checkpoint", commands };

void
transaction_register_command (void)
{
  transaction_register_actions (abort_actions);
  qmp_register_commands (&command_set);
}
