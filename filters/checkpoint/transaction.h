/* Actions: the commands that may also run inside a transaction.  The
 * same function serves both: as a command it runs in a txn of its own.
 */
#ifndef CHECKPOINT_TRANSACTION_H
#define CHECKPOINT_TRANSACTION_H

#include <jansson.h>

#include "qmp.h"
#include "txn.h"

struct txn_action {
  const char *type;             /* the command name, also the action type */
  const struct qmp_arg *args;
  /* Makes the change inside T.  Returns the command's return value, or
   * NULL after setting *ERR (the caller then aborts T).
   */
  json_t *(*run) (struct txn *t, json_t *args, struct qmp_error *err);
};

/* Tables end with {NULL}; registered at load time. */
extern void transaction_register_actions (const struct txn_action *actions);
/* Run A as a command of its own. */
extern json_t *transaction_run_one (const struct txn_action *a, json_t *args,
                                    struct qmp_error *err);
extern void transaction_register_command (void);

#endif /* CHECKPOINT_TRANSACTION_H */
