/* backup-begin (also a transaction action), backup-end, query-backups. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "bitmap.h"
#include "bitmaps.h"
#include "checkpoints.h"
#include "transaction.h"
#include "backup.h"
#include "backup-internal.h"

static unsigned next_id = 1;

static void
add_node_entry (struct node *n, void *list)
{
  json_array_append_new (list, json_pack ("{s:s}", "node", n->name));
}

/* The disks argument, checked: known nodes, none twice. */
static json_t *
checked_disks (json_t *disks, struct qmp_error *err)
{
  static const struct qmp_arg disk_args[] = {
    { "node", QMP_STR, false },
    { "export", QMP_STR, true },
    { NULL }
  };
  json_t *list, *d, *e;
  size_t i, j;

  if (disks == NULL) {
    list = json_array ();
    nodes_foreach (add_node_entry, list);
    return list;
  }
  json_array_foreach (disks, i, d) {
    if (!json_is_object (d)) {
      qmp_error (err, "Invalid parameter type for 'disks', expected: object");
      return NULL;
    }
    if (!qmp_check_args (disk_args, d, "disks.", err) ||
        !bitmaps_node (qmp_arg_str (d, "node", ""), err))
      return NULL;
    for (j = 0; j < i; j++) {
      e = json_array_get (disks, j);
      if (strcmp (qmp_arg_str (e, "node", ""), qmp_arg_str (d, "node", "")) == 0) {
        qmp_error (err, "Disk '%s' is named twice", qmp_arg_str (d, "node", ""));
        return NULL;
      }
    }
  }
  return json_incref (disks);
}

static bool
parse_mode (json_t *args, enum cbw_error_mode *mode, struct qmp_error *err)
{
  const char *s = qmp_arg_str (args, "on-cbw-error", "break-snapshot");

  if (strcmp (s, "break-snapshot") == 0)
    *mode = BREAK_SNAPSHOT;
  else if (strcmp (s, "break-guest-write") == 0)
    *mode = BREAK_GUEST_WRITE;
  else {
    qmp_error (err, "Parameter 'on-cbw-error' does not accept value '%s'", s);
    return false;
  }
  return true;
}

static struct backup *
backup_new (json_t *args, size_t nr_disks, struct qmp_error *err)
{
  struct backup *b = calloc (1, sizeof *b);
  const char *id = qmp_arg_str (args, "id", NULL);

  if (b == NULL || (b->disks = calloc (nr_disks, sizeof *b->disks)) == NULL) {
    free (b);
    qmp_error (err, "out of memory");
    return NULL;
  }
  pthread_mutex_init (&b->lock, NULL);
  if (id)
    b->id = strdup (id);
  else {
    while (asprintf (&b->id, "backup-%u", next_id++) != -1 &&
           backups_find (b->id)) {
      free (b->id);
      b->id = NULL;
    }
  }
  if (qmp_arg_str (args, "incremental", NULL))
    b->incremental = strdup (qmp_arg_str (args, "incremental", NULL));
  return b;
}

/* The chunks changed since the base checkpoint, per disk. */
static int
compute_needed (struct backup *b, struct qmp_error *err)
{
  struct checkpoint *c = checkpoints_find (b->incremental);
  size_t i;

  if (c == NULL) {
    qmp_error (err, "Checkpoint '%s' not found", b->incremental);
    return -1;
  }
  for (i = 0; i < b->nr_disks; i++) {
    struct backup_disk *bd = &b->disks[i];
    if (!checkpoint_covers (c, bd->node->name)) {
      qmp_error (err, "Checkpoint '%s' does not cover disk '%s'",
                 c->name, bd->node->name);
      return -1;
    }
    bd->needed = checkpoints_changed_since (c, bd->node, err);
    if (bd->needed == NULL)
      return -1;
    bitmap_compact (bd->needed);
  }
  return 0;
}

/* Undo of backup-begin: the backup never existed. */
static void
undo_begin (void *p)
{
  struct backup *b = p;

  backup_unlink (b);
  backup_retire (b);
}

static int
init_disks (struct backup *b, json_t *disks, struct qmp_error *err)
{
  json_t *d;
  size_t i;

  json_array_foreach (disks, i, d) {
    const char *export = qmp_arg_str (d, "export", NULL);
    struct node *n = nodes_find (qmp_arg_str (d, "node", ""));
    b->nr_disks++;
    if (backup_disk_init (b, &b->disks[i], n, export, err) == -1)
      return -1;
    if (b->disks[i].export[0] == '\0' ||
        strlen (b->disks[i].export) > 4096) {
      qmp_error (err, "Export name must be 1 to 4096 bytes");
      return -1;
    }
    if (backup_export_taken (b->disks[i].export)) {
      qmp_error (err, "Export '%s' already exists", b->disks[i].export);
      return -1;
    }
  }
  return 0;
}

static json_t *
describe_exports (struct backup *b)
{
  json_t *list = json_array ();
  size_t i;

  for (i = 0; i < b->nr_disks; i++)
    json_array_append_new (list, json_pack (
      "{s:s,s:s,s:I}", "node", b->disks[i].node->name,
      "export", b->disks[i].export, "size", (json_int_t) b->disks[i].size));
  return list;
}

/* Create the checkpoint of "checkpoint": {name, description?}. */
static int
create_checkpoint (struct txn *t, struct backup *b, json_t *spec,
                   struct qmp_error *err)
{
  static const struct qmp_arg spec_args[] = {
    { "name", QMP_STR, false },
    { "description", QMP_STR, true },
    { NULL }
  };
  json_t *disks = json_array ();
  size_t i;
  int r = -1;

  if (!qmp_check_args (spec_args, spec, "checkpoint.", err))
    goto out;
  for (i = 0; i < b->nr_disks; i++)
    json_array_append_new (disks, json_string (b->disks[i].node->name));
  if (checkpoints_create (t, qmp_arg_str (spec, "name", ""),
                          qmp_arg_str (spec, "description", NULL),
                          disks, err) == NULL)
    goto out;
  b->checkpoint = strdup (qmp_arg_str (spec, "name", ""));
  r = 0;
 out:
  json_decref (disks);
  return r;
}

static json_t *
begin_action (struct txn *t, json_t *args, struct qmp_error *err)
{
  json_t *disks, *spec = json_object_get (args, "checkpoint");
  enum cbw_error_mode mode;
  struct backup *b;

  if (!parse_mode (args, &mode, err) ||
      (disks = checked_disks (json_object_get (args, "disks"), err)) == NULL)
    return NULL;
  if (qmp_arg_str (args, "id", NULL) && backups_find (qmp_arg_str (args, "id", ""))) {
    qmp_error (err, "Backup '%s' already exists", qmp_arg_str (args, "id", ""));
    json_decref (disks);
    return NULL;
  }
  b = backup_new (args, json_array_size (disks), err);
  if (b == NULL) {
    json_decref (disks);
    return NULL;
  }
  b->on_cbw_error = mode;
  if (init_disks (b, disks, err) == -1 ||
      (b->incremental && compute_needed (b, err) == -1)) {
    json_decref (disks);
    backup_free (b);
    return NULL;
  }
  json_decref (disks);
  /* The freeze: the barrier is up, so no write is in flight. */
  backup_link (b);
  backup_hold_base (b, 1);
  if (txn_push (t, undo_begin, NULL, b) == -1) {
    qmp_error (err, "out of memory");
    return NULL;
  }
  if (json_is_object (spec) && create_checkpoint (t, b, spec, err) == -1)
    return NULL;
  return json_pack ("{s:s,s:o}", "id", b->id, "exports", describe_exports (b));
}

/* Undo of backup-end: the backup goes on. */
static void
undo_end (void *p)
{
  struct backup *b = p;

  backup_link (b);
  backup_hold_base (b, 1);
}

static json_t *
end_command (json_t *args, struct qmp_error *err)
{
  const char *id = qmp_arg_str (args, "id", "");
  struct backup *b = backups_find (id);
  struct checkpoint *c;
  struct txn t;

  if (b == NULL) {
    qmp_error (err, "Backup '%s' not found", id);
    return NULL;
  }
  txn_begin (&t);
  backup_unlink (b);
  if (txn_push (&t, undo_end, NULL, b) == -1) {
    qmp_error (err, "out of memory");
    txn_abort (&t);
    return NULL;
  }
  /* A failed backup must not move the base of the next incremental:
   * deleting its checkpoint merges that checkpoint's changes back.
   */
  if (!qmp_arg_bool (args, "success", true) && b->checkpoint &&
      (c = checkpoints_find (b->checkpoint)) != NULL &&
      checkpoints_delete (&t, c, false, err) == -1) {
    txn_abort (&t);
    return NULL;
  }
  if (txn_commit (&t, err) == -1)
    return NULL;
  backup_retire (b);
  return json_object ();
}

static json_t *
describe (struct backup *b)
{
  json_t *info = json_pack ("{s:s,s:o}", "id", b->id,
                            "exports", describe_exports (b));
  pthread_mutex_lock (&b->lock);
  json_object_set_new (info, "status",
                       json_string (b->failed ? "failed" : "active"));
  json_object_set_new (info, "copied-bytes",
                       json_integer (__atomic_load_n (&b->copied_bytes,
                                                      __ATOMIC_RELAXED)));
  if (b->error)
    json_object_set_new (info, "error", json_string (b->error));
  pthread_mutex_unlock (&b->lock);
  if (b->incremental)
    json_object_set_new (info, "incremental", json_string (b->incremental));
  if (b->checkpoint)
    json_object_set_new (info, "checkpoint", json_string (b->checkpoint));
  return info;
}

static json_t *
query_command (json_t *args, struct qmp_error *err)
{
  json_t *list = json_array ();
  struct backup *b;

  for (b = backups_list (); b; b = b->next)
    json_array_insert_new (list, 0, describe (b));
  return list;
}

static const struct qmp_arg begin_args[] = {
  { "id", QMP_STR, true },
  { "incremental", QMP_STR, true },
  { "checkpoint", QMP_OBJECT, true },
  { "disks", QMP_ARRAY, true },
  { "on-cbw-error", QMP_STR, true },
  { NULL }
};

static const struct qmp_arg end_args[] = {
  { "id", QMP_STR, false },
  { "success", QMP_BOOL, true },
  { NULL }
};

static const struct txn_action actions[] = {
  { "backup-begin", begin_args, begin_action },
  { NULL }
};

static json_t *
begin_command (json_t *args, struct qmp_error *err)
{
  return transaction_run_one (&actions[0], args, err);
}

static const struct qmp_command commands[] = {
  { "backup-begin", begin_args, begin_command },
  { "backup-end", end_args, end_command },
  { "query-backups", NULL, query_command },
  { NULL }
};

static const struct qmp_command_set command_set = { "checkpoint", commands };

void
backup_register_commands (void)
{
  transaction_register_actions (actions);
  qmp_register_commands (&command_set);
}

/* At shutdown: every backup ends (connections are gone by then). */
void
backups_end_all (void)
{
  struct backup *b;

  while ((b = backups_list ()) != NULL) {
    backup_unlink (b);
    backup_retire (b);
  }
}
