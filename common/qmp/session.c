/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "qmp.h"
#include "session.h"
#include "internal.h"

void
qmp_session_init (struct qmp_session *s, qmp_send_fn send, void *opaque)
{
  memset (s, 0, sizeof *s);
  splitter_init (&s->splitter, QMP_MAX_MESSAGE, QMP_MAX_DEPTH,
                 QMP_MAX_SKIP);
  s->send = send;
  s->opaque = opaque;
}

void
qmp_session_free (struct qmp_session *s)
{
  splitter_free (&s->splitter);
}

static void
send_json (struct qmp_session *s, json_t *msg)
{
  CLEANUP_FREE char *text = json_dumps (msg, JSON_COMPACT);

  if (text)
    s->send (s->opaque, text);
  json_decref (msg);
}

void
qmp_session_greet (struct qmp_session *s)
{
  send_json (s, json_pack ("{s:{s:{s:{s:i,s:i,s:i},s:s},s:[]}}",
                           "QMP", "version", "qemu",
                           "major", 7, "minor", 2, "micro", 0,
                           "package", PACKAGE_NAME " " PACKAGE_VERSION,
                           "capabilities"));
}

/* Reply with an error; ID (borrowed, may be NULL) is echoed. */
static void
send_error (struct qmp_session *s, json_t *id, const char *class,
            const char *desc)
{
  json_t *msg = json_pack ("{s:{s:s,s:s}}", "error",
                           "class", class, "desc", desc ? desc : "");
  if (id)
    json_object_set (msg, "id", id);
  send_json (s, msg);
}

static void
send_return (struct qmp_session *s, json_t *id, json_t *ret)
{
  json_t *msg = json_pack ("{s:o}", "return", ret);
  if (id)
    json_object_set (msg, "id", id);
  send_json (s, msg);
}

/* The members of a request object, checked as QEMU does. */
static bool
check_request (json_t *req, const char **name, json_t **args,
               struct qmp_error *err)
{
  const char *key;
  json_t *v;

  json_object_foreach (req, key, v) {
    if (strcmp (key, "execute") == 0 || strcmp (key, "exec-oob") == 0) {
      if (!json_is_string (v)) {
        qmp_error (err, "QMP input member '%s' must be a string", key);
        return false;
      }
      if (strcmp (key, "exec-oob") == 0) {
        qmp_error (err, "The command %s does not support OOB",
                   json_string_value (v));
        return false;
      }
      *name = json_string_value (v);
    }
    else if (strcmp (key, "arguments") == 0) {
      if (!json_is_object (v)) {
        qmp_error (err, "QMP input member 'arguments' must be an object");
        return false;
      }
      *args = v;
    }
    else if (strcmp (key, "id") != 0) {
      qmp_error (err, "QMP input member '%s' is unexpected", key);
      return false;
    }
  }
  if (*name == NULL) {
    qmp_error (err, "QMP input lacks member 'execute'");
    return false;
  }
  return true;
}

/* qmp_capabilities is handled here: it changes the session's state. */
static json_t *
negotiate (struct qmp_session *s, json_t *args, struct qmp_error *err)
{
  json_t *enable = json_object_get (args, "enable"), *cap;
  size_t i;

  if (s->negotiated) {
    qmp_error_set (err, QMP_ERROR_COMMAND_NOT_FOUND,
                   "Capabilities negotiation is already complete, "
                   "command ignored");
    return NULL;
  }
  json_array_foreach (enable, i, cap) {
    qmp_error (err, "Capability '%s' not available",
               json_is_string (cap) ? json_string_value (cap) : "?");
    return NULL;
  }
  s->negotiated = true;
  return json_object ();
}

static const struct qmp_arg capabilities_args[] = {
  { "enable", QMP_ARRAY, true, "Capabilities to enable (none is offered)." },
  { NULL }
};

static json_t *
execute (struct qmp_session *s, const char *name, json_t *args,
         struct qmp_error *err)
{
  const struct qmp_command *cmd;
  json_t *ret;

  if (strcmp (name, "qmp_capabilities") == 0) {
    if (!qmp_check_args (capabilities_args, args, "", err))
      return NULL;
    return negotiate (s, args, err);
  }
  if (!s->negotiated) {
    qmp_error_set (err, QMP_ERROR_COMMAND_NOT_FOUND,
                   "Expecting capabilities negotiation with "
                   "'qmp_capabilities'");
    return NULL;
  }
  if (__atomic_load_n (&qmp_shutting_down, __ATOMIC_SEQ_CST)) {
    qmp_error (err, "nbdkit is shutting down");
    return NULL;
  }
  cmd = qmp_find_command (name);
  if (cmd == NULL) {
    qmp_error_set (err, QMP_ERROR_COMMAND_NOT_FOUND,
                   "The command %s has not been found", name);
    return NULL;
  }
  if (!qmp_check_args (cmd->args, args, "", err))
    return NULL;
  qmp_lock ();
  ret = cmd->handler (args, err);
  qmp_unlock ();
  if (ret == NULL && err->class == NULL)
    qmp_error (err, "Command %s failed", name);
  return ret;
}

static void
handle_value (struct qmp_session *s, const char *data, size_t len)
{
  struct qmp_error err = { 0 };
  json_error_t jerr;
  json_t *req, *id, *args = NULL, *ret;
  const char *name = NULL;

  req = json_loadb (data, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES,
                    &jerr);
  if (req == NULL) {
    CLEANUP_FREE char *desc = NULL;
    if (asprintf (&desc, "JSON parse error, %s", jerr.text) == -1)
      desc = NULL;
    send_error (s, NULL, QMP_ERROR_GENERIC, desc);
    return;
  }
  if (!json_is_object (req)) {
    send_error (s, NULL, QMP_ERROR_GENERIC,
                "QMP input must be a JSON object");
    json_decref (req);
    return;
  }
  id = json_object_get (req, "id");
  if (!check_request (req, &name, &args, &err))
    ret = NULL;
  else {
    json_t *empty = NULL;

    if (args == NULL)
      args = empty = json_object ();
    ret = execute (s, name, args, &err);
    json_decref (empty);
  }
  if (ret)
    send_return (s, id, ret);
  else
    send_error (s, id, err.class, err.desc);
  qmp_error_clear (&err);
  json_decref (req);
}

static enum splitter_next
on_value (void *opaque, enum splitter_status status,
          const char *data, size_t len)
{
  struct qmp_session *s = opaque;

  switch (status) {
  case SPLIT_VALUE:
    handle_value (s, data, len);
    break;
  case SPLIT_TOO_LARGE:
    send_error (s, NULL, QMP_ERROR_GENERIC,
                "JSON parse error, message larger than 1 MiB");
    break;
  case SPLIT_TOO_DEEP:
    send_error (s, NULL, QMP_ERROR_GENERIC,
                "JSON parse error, nesting deeper than 64 levels");
    break;
  case SPLIT_STRAY:
    send_error (s, NULL, QMP_ERROR_GENERIC,
                "JSON parse error, unexpected closing bracket");
    break;
  case SPLIT_CONTROL:
    send_error (s, NULL, QMP_ERROR_GENERIC,
                "JSON parse error, control character in a message");
    break;
  case SPLIT_ENDLESS:
    send_error (s, NULL, QMP_ERROR_GENERIC,
                "JSON parse error, a bad message went on past 16 MiB: "
                "disconnecting");
    return SPLIT_HALT;
  }
  return s->hold && s->hold (s->opaque) ? SPLIT_PAUSE : SPLIT_GO;
}

ssize_t
qmp_session_feed (struct qmp_session *s, const char *data, size_t n)
{
  return splitter_feed (&s->splitter, data, n, on_value, s);
}

bool
qmp_session_input (struct qmp_session *s, const char *data, size_t n)
{
  while (n > 0) {
    ssize_t r = qmp_session_feed (s, data, n);

    if (r == -1)
      return false;
    data += r;
    n -= r;
  }
  return true;
}
