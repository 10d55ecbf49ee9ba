/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Commands every monitor answers, whichever component hosts it. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "qmp.h"
#include "internal.h"

bool qmp_shutting_down;

static json_t *
query_version (json_t *args, struct qmp_error *err)
{
  return json_pack ("{s:{s:i,s:i,s:i},s:s}",
                    "qemu", "major", 7, "minor", 2, "micro", 0,
                    "package", PACKAGE_NAME " " PACKAGE_VERSION);
}

static json_t *
query_commands (json_t *args, struct qmp_error *err)
{
  json_t *list = qmp_command_names ();

  json_array_append_new (list, json_pack ("{s:s}", "name",
                                          "qmp_capabilities"));
  return list;
}

/* nbdkit waits for NBD clients to leave before .cleanup, which saves
 * state and stops the monitor after this reply has gone out; until
 * then the monitor refuses new clients and further commands.
 */
static json_t *
quit (json_t *args, struct qmp_error *err)
{
  nbdkit_debug ("qmp: quit");
  __atomic_store_n (&qmp_shutting_down, true, __ATOMIC_SEQ_CST);
  nbdkit_shutdown ();
  qmp_run_quit_hooks ();
  return json_object ();
}

/* qmp_capabilities runs in session.c (it changes the session); this
 * entry, with the arguments session.c checks, only documents it.
 */
static const struct qmp_arg capabilities_args[] = {
  { "enable", QMP_ARRAY, true,
    "Capabilities to enable.  None is offered (QEMU's \"oob\" neither): "
    "any name here is refused." },
  { NULL }
};

static const struct qmp_command capabilities_doc = {
  "qmp_capabilities", capabilities_args, NULL,
  "Leave capabilities negotiation mode: the first command of every "
  "connection.  Until it has run, every other command answers "
  "CommandNotFound \"Expecting capabilities negotiation with "
  "'qmp_capabilities'\".",
  "{}.",
  "CommandNotFound \"Capabilities negotiation is already complete, "
  "command ignored\" when sent twice; \"Capability 'NAME' not "
  "available\" for any capability in enable."
};

/* The schema's name of an argument's type (QEMU's builtin names). */
static const char *
schema_type (enum qmp_type type)
{
  switch (type) {
  case QMP_STR: return "str";
  case QMP_BOOL: return "bool";
  case QMP_INT: case QMP_UINT32: case QMP_UINT64: return "int";
  case QMP_ARRAY: return "[any]";
  case QMP_OBJECT: case QMP_ANY: return "any";
  }
  return "any";
}

static int
append (json_t *list, json_t *v)
{
  return v ? json_array_append_new (list, v) : -1;
}

/* One command and its argument object, in QEMU's SchemaInfo shape. */
static int
schema_command (json_t *list, const struct qmp_command *c)
{
  const struct qmp_arg *a;
  json_t *members;
  char *obj;

  if (c->args == NULL || c->args[0].name == NULL)
    return append (list, json_pack ("{s:s,s:s,s:s,s:s}", "name", c->name,
                                    "meta-type", "command",
                                    "arg-type", "q_empty",
                                    "ret-type", "any"));
  if (asprintf (&obj, "q_obj_%s-arg", c->name) == -1)
    return -1;
  members = json_array ();
  for (a = c->args; members && a->name; a++) {
    json_t *m = json_pack ("{s:s,s:s}", "name", a->name,
                           "type", schema_type (a->type));
    if (m && a->optional)
      json_object_set_new (m, "default", json_null ());
    if (append (members, m) == -1) {
      json_decref (members);
      members = NULL;
    }
  }
  if (members == NULL ||
      append (list, json_pack ("{s:s,s:s,s:s,s:s}", "name", c->name,
                               "meta-type", "command", "arg-type", obj,
                               "ret-type", "any")) == -1 ||
      append (list, json_pack ("{s:s,s:s,s:o}", "name", obj,
                               "meta-type", "object",
                               "members", members)) == -1) {
    free (obj);
    return -1;
  }
  free (obj);
  return 0;
}

struct walk {
  json_t *list;
  bool failed;
};

static void
schema_one (const struct qmp_command_set *set, const struct qmp_command *c,
            bool shadowed, void *opaque)
{
  struct walk *w = opaque;

  if (!shadowed && schema_command (w->list, c) == -1)
    w->failed = true;
}

/* QEMU's query-qmp-schema, from the command tables.  The tables do not
 * describe replies, so every ret-type is "any".
 */
static json_t *
query_qmp_schema (json_t *args, struct qmp_error *err)
{
  static const char *const builtin[][2] = {
    { "str", "string" }, { "int", "int" }, { "bool", "boolean" },
    { "any", "value" },
  };
  struct walk w = { json_array (), false };
  size_t i;

  if (w.list == NULL)
    goto oom;
  for (i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
    if (append (w.list, json_pack ("{s:s,s:s,s:s}", "name", builtin[i][0],
                                   "meta-type", "builtin",
                                   "json-type", builtin[i][1])) == -1)
      goto oom;
  if (append (w.list, json_pack ("{s:s,s:s,s:s}", "name", "[any]",
                                 "meta-type", "array",
                                 "element-type", "any")) == -1 ||
      append (w.list, json_pack ("{s:s,s:s,s:[]}", "name", "q_empty",
                                 "meta-type", "object",
                                 "members")) == -1 ||
      schema_command (w.list, &capabilities_doc) == -1)
    goto oom;
  qmp_foreach_command (schema_one, &w);
  if (w.failed)
    goto oom;
  return w.list;
 oom:
  json_decref (w.list);
  qmp_error (err, "out of memory");
  return NULL;
}

static json_t *
doc_string (const char *s)
{
  return json_string (s ? s : "");
}

/* One command's documentation, shadowed ones too. */
static void
docs_one (const struct qmp_command_set *set, const struct qmp_command *c,
          bool shadowed, void *opaque)
{
  struct walk *w = opaque;
  const struct qmp_arg *a;
  json_t *args = json_array (), *entry;

  for (a = c->args; args && a && a->name; a++)
    if (append (args, json_pack ("{s:s,s:s,s:b,s:o}", "name", a->name,
                                 "type", schema_type (a->type),
                                 "optional", a->optional,
                                 "doc", doc_string (a->doc))) == -1) {
      json_decref (args);
      args = NULL;
    }
  entry = args ? json_pack ("{s:s,s:s,s:b,s:o,s:o,s:o,s:o}",
                            "name", c->name, "component", set->component,
                            "shadowed", shadowed,
                            "doc", doc_string (c->doc),
                            "returns", doc_string (c->returns),
                            "errors", doc_string (c->errors),
                            "arguments", args) : NULL;
  if (append (w->list, entry) == -1)
    w->failed = true;
}

/* The tables' documentation (for docs/qmp-reference.md). */
static json_t *
query_qmp_docs (json_t *args, struct qmp_error *err)
{
  static const struct qmp_command_set monitor_set = {
    "monitor", NULL
  };
  struct walk w = { json_array (), false };

  if (w.list)
    docs_one (&monitor_set, &capabilities_doc, false, &w);
  if (w.list)
    qmp_foreach_command (docs_one, &w);
  if (w.list == NULL || w.failed) {
    json_decref (w.list);
    qmp_error (err, "out of memory");
    return NULL;
  }
  return w.list;
}

static const struct qmp_command builtin_commands[] = {
  { "query-version", NULL, query_version,
    "The version: QEMU's numbers, as this monitor speaks QEMU 7.2's "
    "protocol, and this package's.",
    "{\"qemu\": {\"major\": 7, \"minor\": 2, \"micro\": 0}, \"package\": "
    "\"nbdkit-checkpoint VERSION\"}.",
    NULL },
  { "query-commands", NULL, query_commands,
    "Every command this monitor answers, qmp_capabilities included.",
    "[{\"name\"}].",
    NULL },
  { "query-qmp-schema", NULL, query_qmp_schema,
    "The commands and their arguments as QEMU's SchemaInfo list, made "
    "from the same tables that check the arguments.",
    "[SchemaInfo]: {\"name\", \"meta-type\": \"builtin\", \"json-type\"} "
    "for str, int, bool and any; {\"name\": \"[any]\", \"meta-type\": "
    "\"array\", \"element-type\": \"any\"}; {\"name\", \"meta-type\": "
    "\"command\", \"arg-type\", \"ret-type\": \"any\"} for each command "
    "(replies are not described); {\"name\", \"meta-type\": \"object\", "
    "\"members\": [{\"name\", \"type\", \"default\"? (null: optional)}]} "
    "for each command's arguments (\"q_empty\": none).  Object and "
    "array arguments have type \"any\" and \"[any]\".",
    NULL },
  { "x-query-qmp-docs", NULL, query_qmp_docs,
    "The documentation carried by the command tables, from which "
    "docs/qmp-reference.md is generated (not a QEMU command).",
    "[{\"name\", \"component\" (monitor, qmpdisk, checkpoint), "
    "\"shadowed\" (another component's command of that name answers), "
    "\"doc\", \"returns\", \"errors\", \"arguments\": [{\"name\", "
    "\"type\" (as in query-qmp-schema), \"optional\", \"doc\"}]}], in "
    "registration order, qmp_capabilities first.",
    NULL },
  { "quit", NULL, quit,
    "Shut nbdkit down cleanly: the reply goes out, new clients and "
    "further commands are refused, NBD connections end, then the state "
    "(state=) is saved and nbdkit exits with status 0.",
    "{}.",
    "Any later command: \"nbdkit is shutting down\"." },
  { NULL }
};

static const struct qmp_command_set builtins = {
  "monitor", builtin_commands
};

void
qmp_register_builtins (void)
{
  qmp_register_commands (&builtins);
}
