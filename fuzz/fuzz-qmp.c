/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* libFuzzer target: QMP requests in process, without sockets.
 *
 * 1. The whole input goes through a monitor session (common/qmp
 *    session.c: splitting, JSON parsing, request checking, capabilities
 *    negotiation, argument checking and dispatch) serving the monitor's
 *    own commands (query-version, query-commands, quit), whose handlers
 *    run here.  Every reply must be a JSON object of one of the reply
 *    shapes.
 * 2. Every value of the input that is an object has its "arguments"
 *    (or, without them, the object itself) checked with qmp_check_args
 *    against the argument table of every command of the qmpdisk plugin,
 *    taken from the built plugin (FUZZ_QMPDISK_PLUGIN, a path), whose
 *    handlers are never called: they need a running nbdkit.
 *
 * Not covered: the checkpoint filter's tables (it exports only
 * filter_init, and its tables are registered from its .load), nested
 * tables that handlers check themselves (blockdev-add's "server",
 * transaction actions), and the handlers of both components.
 */
#include <config.h>

#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qmp.h"
#include "peer.h"
#include "session.h"
#include "splitter.h"
#include "internal.h"

/* The nbdkit functions that common/qmp calls.  No nbdkit here: quit's
 * nbdkit_shutdown is only counted, and the shutdown flag is reset
 * before each input.
 */
static unsigned shutdowns;

void
nbdkit_debug (const char *fmt, ...)
{
}

void
nbdkit_error (const char *fmt, ...)
{
}

void
nbdkit_shutdown (void)
{
  shutdowns++;
}

/* Only the monitor's configuration calls it, which no input reaches. */
char *
nbdkit_absolute_path (const char *path)
{
  return strdup (path);
}

static const struct qmp_command_set *plugin_commands;

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  const char *path = getenv ("FUZZ_QMPDISK_PLUGIN");
  const struct qmp_peer *peer;
  void *dl;

  if (path == NULL) {
    fprintf (stderr, "fuzz-qmp: set FUZZ_QMPDISK_PLUGIN to the built "
             "nbdkit-qmpdisk-plugin.so\n");
    exit (EXIT_FAILURE);
  }
  /* Lazy: the plugin's calls into nbdkit stay unresolved, and no
   * handler of it runs.
   */
  dl = dlopen (path, RTLD_LAZY | RTLD_LOCAL);
  if (dl == NULL) {
    fprintf (stderr, "fuzz-qmp: %s\n", dlerror ());
    exit (EXIT_FAILURE);
  }
  peer = dlsym (dl, QMP_PEER_PLUGIN_SYMBOL);
  if (peer == NULL || peer->version != QMP_PEER_VERSION ||
      peer->commands == NULL || peer->commands->commands[0].name == NULL) {
    fprintf (stderr, "fuzz-qmp: %s has no usable %s\n",
             path, QMP_PEER_PLUGIN_SYMBOL);
    exit (EXIT_FAILURE);
  }
  plugin_commands = peer->commands;
  qmp_register_builtins ();
  return 0;
}

static bool
is_str (json_t *o, const char *key)
{
  return json_is_string (json_object_get (o, key));
}

/* Each reply: {"return": ...}, {"error": {"class", "desc"}} (both
 * maybe with "id"), or the greeting.
 */
static void
check_reply (void *opaque, const char *msg)
{
  json_error_t jerr;
  json_t *v = json_loads (msg, 0, &jerr), *e;
  size_t n;

  if (!json_is_object (v)) {
    fprintf (stderr, "reply is not a JSON object: %s\n", msg);
    abort ();
  }
  n = json_object_size (v) - (json_object_get (v, "id") != NULL);
  e = json_object_get (v, "error");
  if (n != 1 ||
      !(json_object_get (v, "return") ||
        json_is_object (json_object_get (v, "QMP")) ||
        (json_is_object (e) && is_str (e, "class") && is_str (e, "desc")))) {
    fprintf (stderr, "not a reply: %s\n", msg);
    abort ();
  }
  json_decref (v);
}

static void
check_args_everywhere (json_t *args)
{
  const struct qmp_command *c;

  for (c = plugin_commands->commands; c->name; c++) {
    struct qmp_error err = { 0 };
    bool ok = qmp_check_args (c->args, args, "", &err);

    /* An error exactly when refused, naming a parameter. */
    if (ok != (err.class == NULL) ||
        (!ok && (err.desc == NULL || strstr (err.desc, "'") == NULL)))
      abort ();
    qmp_error_clear (&err);
  }
}

static enum splitter_next
on_value (void *opaque, enum splitter_status status,
          const char *data, size_t len)
{
  json_t *v, *args;

  if (status != SPLIT_VALUE)
    return SPLIT_GO;
  v = json_loadb (data, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
  if (json_is_object (v)) {
    args = json_object_get (v, "arguments");
    check_args_everywhere (json_is_object (args) ? args : v);
  }
  json_decref (v);
  return SPLIT_GO;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const char caps[] = "{\"execute\":\"qmp_capabilities\"}";
  struct qmp_session s;
  struct splitter sp;

  if (size == 0)
    return 0;
  qmp_shutting_down = false;

  /* First byte: negotiate first or not. */
  qmp_session_init (&s, check_reply, NULL);
  qmp_session_greet (&s);
  if (data[0] & 1)
    qmp_session_input (&s, caps, strlen (caps));
  qmp_session_input (&s, (const char *) data + 1, size - 1);
  qmp_session_free (&s);

  splitter_init (&sp, QMP_MAX_MESSAGE, QMP_MAX_DEPTH, QMP_MAX_SKIP);
  splitter_feed (&sp, (const char *) data + 1, size - 1, on_value, NULL);
  splitter_free (&sp);
  return 0;
}
