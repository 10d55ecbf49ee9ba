/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Errors, argument checking and the command registry. */
#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <dlfcn.h>

#include "qmp.h"
#include "peer.h"
#include "internal.h"
#include "server.h"

static const char *
type_name (enum qmp_type type)
{
  switch (type) {
  case QMP_STR: return "string";
  case QMP_BOOL: return "boolean";
  case QMP_INT: case QMP_UINT32: case QMP_UINT64: return "integer";
  case QMP_ARRAY: return "array";
  case QMP_OBJECT: return "object";
  case QMP_ANY: return "any";
  }
  return "?";
}

static bool
check_type (const struct qmp_arg *a, json_t *v, const char *what,
            struct qmp_error *err)
{
  bool ok;

  switch (a->type) {
  case QMP_STR: ok = json_is_string (v); break;
  case QMP_BOOL: ok = json_is_boolean (v); break;
  case QMP_INT: case QMP_UINT32: case QMP_UINT64: ok = json_is_integer (v); break;
  case QMP_ARRAY: ok = json_is_array (v); break;
  case QMP_OBJECT: ok = json_is_object (v); break;
  default: ok = true;
  }
  if (!ok) {
    qmp_error (err, "Invalid parameter type for '%s%s', expected: %s",
               what, a->name, type_name (a->type));
    return false;
  }
  if (a->type == QMP_UINT32 &&
      (json_integer_value (v) < 0 || json_integer_value (v) > UINT32_MAX)) {
    qmp_error (err, "Parameter '%s%s' expects uint32_t", what, a->name);
    return false;
  }
  if (a->type == QMP_UINT64 && json_integer_value (v) < 0) {
    qmp_error (err, "Parameter '%s%s' expects a non-negative value",
               what, a->name);
    return false;
  }
  return true;
}

bool
qmp_check_args (const struct qmp_arg *spec, json_t *args, const char *what,
                struct qmp_error *err)
{
  const struct qmp_arg *a;
  const char *key;
  json_t *v;

  for (a = spec; a && a->name; a++) {
    v = json_object_get (args, a->name);
    if (v == NULL) {
      if (!a->optional) {
        qmp_error (err, "Parameter '%s%s' is missing", what, a->name);
        return false;
      }
      continue;
    }
    if (!check_type (a, v, what, err))
      return false;
  }
  json_object_foreach (args, key, v) {
    for (a = spec; a && a->name; a++)
      if (strcmp (a->name, key) == 0)
        break;
    if (a == NULL || a->name == NULL) {
      qmp_error (err, "Parameter '%s%s' is unexpected", what, key);
      return false;
    }
  }
  return true;
}

const char *
qmp_arg_str (json_t *args, const char *name, const char *def)
{
  json_t *v = json_object_get (args, name);
  return json_is_string (v) ? json_string_value (v) : def;
}

bool
qmp_arg_bool (json_t *args, const char *name, bool def)
{
  json_t *v = json_object_get (args, name);
  return json_is_boolean (v) ? json_is_true (v) : def;
}

int64_t
qmp_arg_int (json_t *args, const char *name, int64_t def)
{
  json_t *v = json_object_get (args, name);
  return json_is_integer (v) ? json_integer_value (v) : def;
}

/* The registry.  Sets are registered at load time (single threaded)
 * and the peer's are added when the host starts, so lookups need no
 * lock.  The first set registered for a name wins: the host's own
 * commands come before its peer's.
 */
#define MAX_SETS 16
static const struct qmp_command_set *sets[MAX_SETS];
static size_t nr_sets;

void
qmp_register_commands (const struct qmp_command_set *set)
{
  size_t i;

  for (i = 0; i < nr_sets; i++)
    if (sets[i] == set)
      return;
  if (nr_sets < MAX_SETS)
    sets[nr_sets++] = set;
}

const struct qmp_command *
qmp_find_command (const char *name)
{
  const struct qmp_command *c;
  size_t i;

  for (i = 0; i < nr_sets; i++)
    for (c = sets[i]->commands; c->name; c++)
      if (strcmp (c->name, name) == 0)
        return c;
  return NULL;
}

json_t *
qmp_command_names (void)
{
  const struct qmp_command *c;
  json_t *list = json_array ();
  size_t i;

  for (i = 0; i < nr_sets; i++)
    for (c = sets[i]->commands; c->name; c++)
      if (qmp_find_command (c->name) == c)
        json_array_append_new (list, json_pack ("{s:s}", "name", c->name));
  return list;
}

void
qmp_foreach_command (void (*fn) (const struct qmp_command_set *,
                                 const struct qmp_command *, bool, void *),
                     void *opaque)
{
  const struct qmp_command *c;
  size_t i;

  for (i = 0; i < nr_sets; i++)
    for (c = sets[i]->commands; c->name; c++)
      fn (sets[i], c, qmp_find_command (c->name) != c, opaque);
}

const struct qmp_peer *
qmp_find_peer (const char *symbol)
{
  const struct qmp_peer *peer = dlsym (RTLD_DEFAULT, symbol);

  if (peer == NULL || peer->version != QMP_PEER_VERSION)
    return NULL;
  return peer;
}

/* The monitor lock and the event sender: the host's own, or lent by
 * the host when this component is its peer.
 */
static pthread_mutex_t monitor_lock = PTHREAD_MUTEX_INITIALIZER;
static const struct qmp_host *lent_host;

static void
local_lock (void)
{
  pthread_mutex_lock (&monitor_lock);
}

static void
local_unlock (void)
{
  pthread_mutex_unlock (&monitor_lock);
}

static const struct qmp_host local_host = {
  .emit_event = qmp_server_emit_event,
  .lock = local_lock,
  .unlock = local_unlock,
};

void
qmp_attach (const struct qmp_host *host)
{
  lent_host = host;
}

bool
qmp_attached (void)
{
  return lent_host != NULL;
}

void
qmp_lock (void)
{
  (lent_host ? lent_host : &local_host)->lock ();
}

void
qmp_unlock (void)
{
  (lent_host ? lent_host : &local_host)->unlock ();
}

void
qmp_emit_event (const char *name, json_t *data)
{
  (lent_host ? lent_host : &local_host)->emit_event (name, data);
}

static void (*quit_hook) (void);
static const struct qmp_peer *adopted_peer;

void
qmp_on_quit (void (*fn) (void))
{
  quit_hook = fn;
}

void
qmp_component_quit (void)
{
  if (quit_hook)
    quit_hook ();
}

void
qmp_run_quit_hooks (void)
{
  qmp_component_quit ();
  if (adopted_peer && adopted_peer->quit)
    adopted_peer->quit ();
}

const struct qmp_peer *
qmp_server_adopt_peer (const char *symbol)
{
  const struct qmp_peer *peer = qmp_find_peer (symbol);

  if (peer == NULL)
    return NULL;
  adopted_peer = peer;
  if (peer->commands)
    qmp_register_commands (peer->commands);
  if (peer->attach)
    peer->attach (&local_host);
  return peer;
}
