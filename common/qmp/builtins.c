/* Commands every monitor answers, whichever component hosts it. */
#include <config.h>

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

/* nbdkit then closes connections and calls .cleanup, which saves
 * state and stops the monitor after this reply has gone out.
 */
/* nbdkit waits for NBD clients to leave before .cleanup; until then
 * the monitor refuses new clients and further commands.
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

static const struct qmp_command builtin_commands[] = {
  { "query-version", NULL, query_version },
  { "query-commands", NULL, query_commands },
  { "quit", NULL, quit },
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
